"""Tables and training curves of docs/RESULTS.md, from the runs of bench/reproduce.sh (its
stages original, improved and seeds: their metrics.csv and summary.json files).

    python -m bench.results --results logs/results --plots docs
"""

import csv
import glob
import json
import math
import os
import statistics

import click

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


def seed_runs(results, model):
    """-> {"Keras": [...], "PyTorch": [...]}: the original-recipe runs of the current code, one per seed
    (Keras with TorchAdam from STAGE=seeds of bench/reproduce.sh; PyTorch seed 0 from its original stage, others
    from STAGE=seeds)."""
    keras_runs = [read(p) for p in sorted(glob.glob(os.path.join(results, "seeds", "keras", f"{model}-*")))
                  if os.path.isfile(os.path.join(p, "summary.json"))]
    torch_paths = [os.path.join(results, "pytorch", model)]
    torch_paths += sorted(glob.glob(os.path.join(results, "seeds", "pytorch", f"{model}-seed*")))
    torch_runs = []
    for path in torch_paths:
        if os.path.isfile(os.path.join(path, "summary.json")):
            run = read(path)
            run["config"] = json.load(open(os.path.join(path, "summary.json")))
            torch_runs.append(run)
    return {"Keras": keras_runs, "PyTorch": torch_runs}


def spread(values):
    """'mean ± sd' in points (sd over runs; '-' for one run)."""
    mean = 100 * statistics.mean(values)
    return f"{mean:.2f}" + (f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else "")


def plot_seeds(results, model, output):
    """Test accuracy per epoch over seeds: the mean of each framework, and its lowest-highest band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=100)
    for framework, runs in seed_runs(results, model).items():
        epochs = min(len(r["val"]) for r in runs)
        curves = [[100 * v for v in r["val"][:epochs]] for r in runs]
        x = range(1, epochs + 1)
        mean = [statistics.mean(column) for column in zip(*curves)]
        label = f"{framework}, mean of {len(runs)} seeds" if len(runs) > 1 else f"{framework}, 1 seed"
        line, = axis.plot(x, mean, marker=".", label=label)
        if len(runs) > 1:
            axis.fill_between(x, [min(c) for c in zip(*curves)], [max(c) for c in zip(*curves)],
                              color=line.get_color(), alpha=0.2, label=f"{framework}, lowest to highest run")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.set_xlabel("epoch")
    axis.set_ylabel("test accuracy (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"{model}, original recipe: Keras port and PyTorch reference over seeds")
    figure.tight_layout()
    figure.savefig(output)
    plt.close(figure)


def seed_table(results, plots=None):
    """Prints the reproduction table (the original recipe over seeds, current code); returns
    {model: mean final accuracy of the Keras runs}."""
    lines, keras_means = [], {}
    for model in SMALL:
        runs = seed_runs(results, model)
        if not (runs["Keras"] and runs["PyTorch"]):
            continue
        if plots:
            plot_seeds(results, model, os.path.join(plots, f"seeds-{model}.png"))
        measures = {}
        for framework, framework_runs in runs.items():
            finals = [r["final"] for r in framework_runs]
            bests = [r["best"] for r in framework_runs]
            lasts = [statistics.mean(r["val"][-10:]) for r in framework_runs]
            measures[framework] = (finals, bests, lasts)
            seeds = ", ".join(str(r["config"].get("seed")) for r in framework_runs)
            seconds = statistics.median(r["epoch_time"] for r in framework_runs)
            lines.append(f"| {model} | {framework_runs[0]['epochs']} | {framework} | {seeds} | {spread(finals)} | "
                         f"{spread(bests)} | {spread(lasts)} | {' / '.join(f'{100 * v:.2f}' for v in finals)} | "
                         f"{seconds:.0f} |")
        keras_means[model] = statistics.mean(measures["Keras"][0])
        cells = []
        for k, t in zip(measures["Keras"], measures["PyTorch"]):
            difference = 100 * (statistics.mean(k) - statistics.mean(t))
            error = 100 * math.sqrt(sum(statistics.variance(v) / len(v) for v in (k, t) if len(v) > 1))
            cells.append(f"**{difference:+.2f}** ± {error:.2f}" if error else f"**{difference:+.2f}**")
        lines.append(f"| {model} | | Keras - PyTorch | | {cells[0]} | {cells[1]} | {cells[2]} | | |")
    if lines:
        print("| model | epochs | framework | seeds | final | best | mean of the last 10 epochs | final per run | "
              "median s/epoch |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(lines))
    return keras_means


@click.command()
@click.option("--results", default="logs/results", show_default=True)
@click.option("--plots", default=None, help="Folder to write the curves (PNG) into.")
def main(results, plots):
    from keras_cifar.train.plots import plot_runs

    keras_means = seed_table(results, plots)
    print("\n| model | Keras final (best) | PyTorch final (best) | Keras - PyTorch (final) | "
          "median s/epoch Keras / PyTorch |")
    print("|---|---|---|---|---|")
    improvements = []
    for model in SMALL:
        first_run = latest(os.path.join(results, "keras", f"{model}-*"))
        torch_run = os.path.join(results, "pytorch", model)
        has_torch = os.path.isfile(os.path.join(torch_run, "metrics.csv"))
        if first_run:
            k = read(first_run)
            t = read(torch_run) if has_torch else None
            torch_cells = (f"{pct(t['final'])} ({pct(t['best'])})", f"{100 * (k['final'] - t['final']):+.2f}",
                           f"{k['epoch_time']:.0f} / {t['epoch_time']:.0f}") if t else ("-", "-", "-")
            print(f"| {model} | {pct(k['final'])} ({pct(k['best'])}) | {torch_cells[0]} | {torch_cells[1]} | "
                  f"{torch_cells[2]} |")
        improved_run = latest(os.path.join(results, "keras-improved", f"{model}-*"))
        if improved_run and model in keras_means:
            improvements.append((model, keras_means[model], read(improved_run)))
        current = [r["run"] for r in seed_runs(results, model)["Keras"] if r["config"].get("seed") == 0]
        if plots and current:
            runs, labels = [current[0]], ["Keras port, original recipe (seed 0)"]
            if has_torch:
                runs.append(torch_run)
                labels.append("PyTorch reference, original recipe (seed 0)")
            if improved_run:
                runs.append(improved_run)
                labels.append("Keras port, improved recipe")
            output = os.path.join(plots, f"results-{model}.png")
            plot_runs(runs, output, labels, title=f"{model} on CIFAR-10 (real data, CPU)")
    if improvements:
        print("\n| model | epochs | original recipe, Keras final (mean over seeds) | improved final (best) | "
              "gain (points) | median s/epoch improved |")
        print("|---|---|---|---|---|---|")
        for model, original, i in improvements:
            print(f"| {model} | {i['epochs']} | {pct(original)} | {pct(i['final'])} ({pct(i['best'])}) | "
                  f"**{100 * (i['final'] - original):+.2f}** | {i['epoch_time']:.0f} |")


if __name__ == "__main__":
    main()
