"""Seconds per epoch of the airbench recipes: `cli.py fit --config configs/airbench94.yaml` against airbench94
itself in plain PyTorch (pytorch_reference/airbench_torch.py), on the same data, CPU threads and precision.

Each side runs 3 epochs in a fresh process, and its steady epoch is the mean of epochs 2 and 3:
for `cli.py fit`, the steps of the `wall_s` column of the run's metrics.csv (wall time from the
first step to the end of each epoch, so an epoch's step holds its training, its evaluation of the
test set and everything the callbacks do: checkpoints, metrics.csv, TensorBoard); for airbench94,
its own loop's training time plus its per-epoch evaluation of the test set. Rounds alternate
which program goes first (`--rounds`, bench/timing.py; the table gives the median), so drift of the machine falls
on both. Both train 48 full steps (49,152 images) per epoch: airbench's loader and configs/airbench94.yaml
(`drop_last`) drop the last partial batch; the table gives seconds per epoch and images per second,
each side's images per epoch read from its own run (summary.json's `train_images_per_epoch`), and
splits each side's epoch into training and evaluation (cli.py fit's from summary.json's
`time_parts_s`, what its own callbacks timed; airbench's from its per-epoch clocks), with cli.py fit's
checkpoint, logs and loop between them apart (airbench's loop writes its report outside its clock).

    python -m bench.airbench_epochs --rounds 3           # bf16 on the CPU, as configs/airbench94.yaml
    python -m bench.airbench_epochs --precision none     # float32 on both sides
    python -m bench.airbench_epochs --recipe muon        # configs/airbench94_muon.yaml against airbench94_muon
                                                     # (pytorch_reference/airbench_muon_torch.py): 25 steps of 2000
    python -m bench.airbench_epochs --recipe airbench95 --train-images 10240 --test-images 2000
                                                     # the wider net against airbench95, on 10 steps of 1024
    python -m bench.airbench_epochs --rounds 3 --baseline ../before
                                                     # and another checkout's cli.py fit in the same rounds

The data set's array cache is prepared before the first round, so that no program pays for it.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

import click

from bench.epochs import (DEFAULT_DATA, REPO, cli_fit_epochs, describe_checkout, image_arguments, machine_name,
                          mean_parts, steady_epoch, warm_data_cache)
from bench.timing import interleaved

AIRBENCH_PRECISION = {"bf16": "bf16", "none": "fp32"}
# recipe -> (config of cli.py fit, airbench's program in plain PyTorch and its arguments, its batch size)
RECIPES = {"airbench94": ("airbench94.yaml", ["pytorch_reference.airbench_torch"], 1024),
           "muon": ("airbench94_muon.yaml", ["pytorch_reference.airbench_muon_torch"], 2000),
           "airbench95": ("airbench95.yaml", ["pytorch_reference.airbench_torch", "--variant", "airbench95"], 1024)}


def airbench_epochs(data, precision, threads, epochs=3, recipe="airbench94", limits=(None, None)):
    """airbench's per-epoch rows (train_time_s, eval_time_s, steps), in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "airbench.json")
        command = [sys.executable, "-m", *RECIPES[recipe][1], "--device", "cpu", "--threads", str(threads),
                   "--precision", AIRBENCH_PRECISION[precision], "--epochs", str(epochs), "--data", data,
                   "--out", out, *image_arguments(limits, "--test-images")]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        with open(out) as file:
            return json.load(file)["epochs"]


def keras_epochs(data, precision, epochs=3, recipe="airbench94", limits=(None, None), checkout=REPO):
    """`cli.py fit --config configs/<recipe's>.yaml` in a fresh process (bench.epochs.cli_fit_epochs), from
    `checkout` (its cli.py and its configs)."""
    return cli_fit_epochs(["--config", os.path.join(checkout, "configs", RECIPES[recipe][0]), "--no-tta",
                           "--mixed-precision", precision, *image_arguments(limits, "--eval-images")],
                          data, "cpu", epochs, checkout=checkout)


def measure(data, precision, threads, rounds, recipe="airbench94", limits=(None, None), baseline=None):
    """`rounds` interleaved rounds of both programs (three with `baseline`, another checkout's cli.py
    fit); -> one row per round."""
    warm_data_cache(data)
    programs = {"keras": lambda: keras_epochs(data, precision, recipe=recipe, limits=limits),
                "airbench": lambda: airbench_epochs(data, precision, threads, recipe=recipe, limits=limits)}
    if baseline:
        programs["baseline"] = lambda: keras_epochs(data, precision, recipe=recipe, limits=limits, checkout=baseline)
    runs = interleaved(programs, rounds)
    rows = []
    for index, (keras_run, airbench) in enumerate(zip(runs["keras"], runs["airbench"])):
        steady = airbench[1:3]
        parts = mean_parts(keras_run["epochs"])
        rows.append({"keras": steady_epoch(keras_run["wall_s"]), "keras_images": keras_run["images"],
                     "airbench": statistics.mean(r["train_time_s"] + r["eval_time_s"] for r in steady),
                     "airbench_images": RECIPES[recipe][2] * steady[0]["steps"],
                     "keras_train": parts["train"], "keras_eval": parts["evaluation"],
                     "keras_outside": parts["outside"],
                     "airbench_train": statistics.mean(r["train_time_s"] for r in steady),
                     "airbench_eval": statistics.mean(r["eval_time_s"] for r in steady)})
        if baseline:
            rows[-1]["baseline"] = steady_epoch(runs["baseline"][index]["wall_s"])
            rows[-1]["baseline_checkout"] = baseline
    return rows


def summarize(rows):
    keras = statistics.median(r["keras"] for r in rows)
    airbench = statistics.median(r["airbench"] for r in rows)
    keras_rate = rows[0]["keras_images"] / keras
    airbench_rate = rows[0]["airbench_images"] / airbench
    parts = {key: statistics.median(r[key] for r in rows) for key in
             ("keras_train", "keras_eval", "keras_outside", "airbench_train", "airbench_eval")}
    return {"keras": keras, "airbench": airbench, "ratio_epoch": airbench / keras,
            "keras_rate": keras_rate, "airbench_rate": airbench_rate, "ratio_rate": keras_rate / airbench_rate, **parts}


def print_table(rows, precision, machine, recipe="airbench94"):
    s = summarize(rows)
    config = RECIPES[recipe][0]
    program = {"muon": "airbench94_muon"}.get(recipe, recipe)
    print(f"\n{config}, seconds per epoch (training + test evaluation), {precision}, {machine}; "
          f"median of {len(rows)} round(s)")
    print("ratio > 1: cli.py fit is faster (epoch: airbench s / cli s; images: cli images/s / airbench images/s)")
    print(f"| | cli.py fit (Keras, {config}) | {program}, plain PyTorch | ratio |")
    print("|---|---|---|---|")
    print(f"| s per epoch | {s['keras']:.1f} | {s['airbench']:.1f} | {s['ratio_epoch']:.2f} |")
    print(f"| training images per epoch | {rows[0]['keras_images']:,} | {rows[0]['airbench_images']:,} | |")
    print(f"| images/s (epoch incl. evaluation) | {s['keras_rate']:.0f} | {s['airbench_rate']:.0f} | "
          f"{s['ratio_rate']:.2f} |")
    # cli.py fit's parts from its summary.json (time_parts_s), airbench's from its own per-epoch clocks
    print(f"| of which training | {s['keras_train']:.2f} | {s['airbench_train']:.2f} | "
          f"{s['airbench_train'] / s['keras_train']:.2f} |")
    print(f"| of which evaluation | {s['keras_eval']:.2f} | {s['airbench_eval']:.2f} | "
          f"{s['airbench_eval'] / s['keras_eval']:.2f} |")
    print(f"| of which checkpoint, logs, the loop between | {s['keras_outside']:.2f} | (not counted) | |")
    print("Each round's ratio (epoch): " + ", ".join(f"{r['airbench'] / r['keras']:.2f}" for r in rows), flush=True)
    if "baseline" in rows[0]:
        baseline = statistics.median(r["baseline"] for r in rows)
        print(f"\nAgainst --baseline {describe_checkout(rows[0]['baseline_checkout'])}: s per epoch {baseline:.1f}, this "
              f"checkout {s['keras']:.1f}, ratio (baseline / this; > 1: this checkout is faster) "
              f"**{statistics.median(r['baseline'] / r['keras'] for r in rows):.2f}**; each round: "
              + ", ".join(f"{r['baseline'] / r['keras']:.2f}" for r in rows), flush=True)
    return s


@click.command()
@click.option("--data", default=DEFAULT_DATA, show_default=True, help="Any --data source of cli.py.")
@click.option("--precision", type=click.Choice(["bf16", "none"]), default="bf16", show_default=True)
@click.option("--rounds", type=int, default=2, show_default=True,
              help="Repetitions, alternating which program goes first (the table: the median).")
@click.option("--recipe", type=click.Choice(list(RECIPES)), default="airbench94", show_default=True,
              help="airbench94: configs/airbench94.yaml; muon: configs/airbench94_muon.yaml; airbench95: "
                   "configs/airbench95.yaml; each against its airbench.")
@click.option("--train-images", type=int, default=None,
              help="Train on this many images on both sides (default all; shorter epochs, the same steps).")
@click.option("--test-images", type=int, default=None, help="Evaluate on this many images on both sides (default all).")
@click.option("--baseline", default=None, type=click.Path(exists=True, file_okay=False),
              help="Another keras-cifar checkout whose cli.py fit (its configs) runs in the same rounds, with this "
                   "environment's packages: a change measured side by side.")
def main(data, precision, rounds, recipe, train_images, test_images, baseline):
    import torch

    if baseline and not os.path.isfile(os.path.join(baseline, "cli.py")):
        raise click.BadParameter(f"{baseline} holds no cli.py: not a keras-cifar checkout", param_hint="--baseline")
    print(f"{rounds} round(s) of cli.py fit and {recipe}, 3 epochs each ...", file=sys.stderr, flush=True)
    rows = measure(data, precision, torch.get_num_threads(), rounds, recipe, (train_images, test_images),
                   baseline and os.path.abspath(baseline))
    print_table(rows, precision, machine_name("cpu"), recipe)

if __name__ == "__main__":
    main()
