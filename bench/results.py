"""Tables and training curves of docs/RESULTS.md, from the runs of bench/reproduce.sh and
bench/improved.sh (their metrics.csv and summary.json files).

    python bench/results.py --results logs/results --plots docs
"""

import csv
import glob
import os
import statistics
import sys

import click

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SMALL = ("cnn", "resnet_lite", "inception_lite")


def latest(pattern):
    runs = sorted(p for p in glob.glob(pattern) if os.path.isfile(os.path.join(p, "metrics.csv")))
    return runs[-1] if runs else None


def read(run):
    with open(os.path.join(run, "metrics.csv")) as handle:
        rows = list(csv.DictReader(handle))
    accuracies = [float(r["val_accuracy"]) for r in rows]
    times = [float(r["epoch_time_s"]) for r in rows if r.get("epoch_time_s")]
    config = {}
    if os.path.isfile(os.path.join(run, "config.yaml")):
        import yaml

        config = yaml.safe_load(open(os.path.join(run, "config.yaml")))
    return {
        "epochs": len(rows), "final": accuracies[-1], "best": max(accuracies),
        "best_epoch": accuracies.index(max(accuracies)) + 1, "epoch_time": statistics.median(times) if times else None,
        "val": accuracies, "losses": [float(r["loss"]) for r in rows], "train": [float(r["accuracy"]) for r in rows],
        "config": config, "run": run,
    }


def pct(value):
    return f"{100 * value:.2f}%"


@click.command()
@click.option("--results", default="logs/results", show_default=True)
@click.option("--plots", default=None, help="Folder to write the curves (PNG) into.")
def main(results, plots):
    from keras_cifar.train.plots import plot_runs

    print("| model | recipe | epochs | Keras final (best) | PyTorch final (best) | Keras - PyTorch (final) | "
          "median s/epoch Keras / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    improvements = []
    for model in SMALL:
        keras_run = latest(os.path.join(results, "keras", f"{model}-*"))
        torch_run = os.path.join(results, "pytorch", model)
        improved_run = latest(os.path.join(results, "keras-improved", f"{model}-*"))
        if keras_run:
            k = read(keras_run)
            t = read(torch_run) if os.path.isfile(os.path.join(torch_run, "metrics.csv")) else None
            torch_cells = (f"{pct(t['final'])} ({pct(t['best'])})", f"{100 * (k['final'] - t['final']):+.2f}",
                           f"{k['epoch_time']:.0f} / {t['epoch_time']:.0f}") if t else ("-", "-", "-")
            print(f"| {model} | original | {k['epochs']} | {pct(k['final'])} ({pct(k['best'])}) | {torch_cells[0]} | "
                  f"{torch_cells[1]} | {torch_cells[2]} |")
        if improved_run:
            i = read(improved_run)
            print(f"| {model} | improved | {i['epochs']} | {pct(i['final'])} ({pct(i['best'])}) | - | - | "
                  f"{i['epoch_time']:.0f} / - |")
            if keras_run:
                improvements.append((model, k, i))
        if plots and keras_run:
            runs, labels = [keras_run], ["Keras, original recipe"]
            if os.path.isfile(os.path.join(torch_run, "metrics.csv")):
                runs.append(torch_run)
                labels.append("PyTorch reference, original recipe")
            if improved_run:
                runs.append(improved_run)
                labels.append("Keras, improved recipe")
            rerun = latest(os.path.join(results, "keras-torchadam", f"{model}-*"))
            if rerun:
                runs.insert(1, rerun)
                labels.insert(1, "Keras, original recipe, TorchAdam")
            output = os.path.join(plots, f"results-{model}.png")
            plot_runs(runs, output, labels, title=f"{model} on CIFAR-10 (real data, CPU)")
            print(f"<!-- wrote {output} -->")
    if improvements:
        print("\n| model | original final | improved final | gain (points) | original best | improved best |")
        print("|---|---|---|---|---|---|")
        for model, k, i in improvements:
            print(f"| {model} | {pct(k['final'])} | {pct(i['final'])} | {100 * (i['final'] - k['final']):+.2f} | "
                  f"{pct(k['best'])} | {pct(i['best'])} |")
    studies = [
        ("resnet_lite", "Keras, seed 0, Keras's Adam (epsilon 1e-7)", os.path.join(results, "keras", "resnet_lite-*")),
        ("resnet_lite", "Keras, seed 0, Keras's Adam with epsilon 1e-8",
         os.path.join(results, "keras-eps1e-8", "resnet_lite-*")),
        ("resnet_lite", "Keras, seed 0, TorchAdam (torch.optim.Adam's update; the default now)",
         os.path.join(results, "keras-torchadam", "resnet_lite-*")),
        ("resnet_lite", "PyTorch, seed 0", os.path.join(results, "pytorch", "resnet_lite")),
        ("resnet_lite", "PyTorch, seed 1", os.path.join(results, "pytorch-seed1", "resnet_lite")),
        ("cnn", "Keras, PyTorch initialisation (default), Keras's Adam (epsilon 1e-7)",
         os.path.join(results, "keras", "cnn-*")),
        ("cnn", "Keras, Keras initialisation (`--init keras`), Keras's Adam with epsilon 1e-8",
         os.path.join(results, "keras-init", "cnn-*")),
        ("cnn", "PyTorch", os.path.join(results, "pytorch", "cnn")),
    ]
    rows = [(model, label, latest(pattern)) for model, label, pattern in studies]
    rows = [(model, label, read(run)) for model, label, run in rows if run]
    if rows:
        print("\n| model | run | final | best | mean of the last 10 epochs | train accuracy, last epoch |")
        print("|---|---|---|---|---|---|")
        for model, label, r in rows:
            print(f"| {model} | {label} | {pct(r['final'])} | {pct(r['best'])} | "
                  f"{pct(statistics.mean(r['val'][-10:]))} | {pct(r['train'][-1])} |")
    short = sorted(p for p in glob.glob(os.path.join(results, "keras-short", "*-*"))
                   if os.path.isfile(os.path.join(p, "metrics.csv")))
    if short:
        print("\n| model | steps | train loss per epoch | train accuracy per epoch | test accuracy per epoch |")
        print("|---|---|---|---|---|")
        for run in short:
            s = read(run)
            steps = s["epochs"] * -(-int(s["config"].get("train_images") or 50000) // int(s["config"]["batch_size"]))
            print(f"| {s['config'].get('model')} | {steps} | {' → '.join(f'{v:.3f}' for v in s['losses'])} | "
                  f"{' → '.join(pct(v) for v in s['train'])} | {' → '.join(pct(v) for v in s['val'])} |")


if __name__ == "__main__":
    main()
