"""End-to-end seconds per epoch: `cli.py fit` against a tidy plain PyTorch loop.

What a user meets: a steady epoch of the real command, with its evaluation of the test set,
checkpoints, metrics.csv and TensorBoard logs. `cli.py fit --epochs 3` runs in a fresh process and
its steady epoch is the mean of epochs 2 and 3 from the `wall_s` column of the run's metrics.csv
(wall time from the first step to each epoch's end: start-up, data loading and graph capture fall
before the first step, and the first epoch's warm-up is left out). The yardstick is
`pytorch_reference.torch_loop.TidyRun` on the same data, batch size and threads, also 3 epochs in a fresh
process: the mean of its epochs 2 and 3, each a training epoch plus the test set's evaluation.
Rounds (`--rounds`) alternate which of the two runs first, so drift of the machine falls on both;
the table gives the median.

    python -m bench.epochs --models cnn,resnet_lite,inception_lite
    python -m bench.epochs --models cnn --batch-size 128 --rounds 3
"""

import csv
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "cifar10-jpeg.tar.gz")
ORIGINAL_BATCH = {"cnn": 32, "resnet_lite": 32, "inception_lite": 16, "googlenet": 32, "resnet18": 32}
TORCH_OPTIMIZER = {"cnn": ("adam", 1e-3), "resnet_lite": ("adam", 1e-3), "inception_lite": ("adam", 1e-3),
                   "googlenet": ("adam", 1e-4), "resnet18": ("sgd", 1e-3)}


def cli_fit_epochs(args, data, device, epochs=3):
    """`cli.py fit ARGS` for `epochs` epochs in a fresh process: its `wall_s` column (seconds
    from the first step to each epoch's end) and its training images per epoch."""
    with tempfile.TemporaryDirectory() as logs:
        command = [sys.executable, os.path.join(REPO, "cli.py"), "fit", *args, "--epochs", str(epochs),
                   "--data", data, "--log-dir", logs, "--device", device]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        (run,) = glob.glob(os.path.join(logs, "*", ""))
        with open(os.path.join(run, "metrics.csv")) as file:
            elapsed = [float(row["wall_s"]) for row in csv.DictReader(file)]
        with open(os.path.join(run, "summary.json")) as file:
            return elapsed, json.load(file)["train_images_per_epoch"]


def steady_epoch(elapsed):
    """Mean of epochs 2 and 3 from cumulative seconds at each epoch's end."""
    return (elapsed[2] - elapsed[0]) / 2


def tidy_epochs(model, batch_size, data, device, epochs=3, probe_steps=30):
    """Seconds of each of `epochs` epochs (train + test evaluation) of the tidy loop, in its fastest
    memory format and optimizer implementation (probed first on `probe_steps` steps), in a fresh
    process like the CLI's."""
    code = f"""
import json, time, torch
import keras_cifar
from keras_cifar.data import load_cifar
from keras_cifar.train.device import set_precision
from pytorch_reference.torch_loop import fastest_tidy_run
set_precision("none", {device!r})  # TF32 and cuDNN autotuning on a GPU, as the product
data = load_cifar({data!r}, None, log=lambda m: None)
optimizer, lr = {TORCH_OPTIMIZER[model]!r}
run = fastest_tidy_run({model!r}, data.train, data.test, {batch_size}, optimizer, lr,
                       device={device!r}, probe_steps={probe_steps})
times = []
for epoch in range({epochs}):
    start = time.perf_counter(); run.train_epoch(); run.evaluate()
    if {device!r}.startswith("cuda"):
        torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
setup = run.memory_format == torch.channels_last and "channels_last" or "contiguous"
print(json.dumps({{"times": times, "memory_format": setup, "implementation": run.implementation}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if result.returncode:
        raise RuntimeError(f"tidy loop failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def in_turn(programs, reverse=False):
    """Runs `programs` (name -> callable without arguments) one after another, in their order or
    reversed (rounds alternate, so drift of the machine falls on all); -> {name: result}."""
    names = list(programs)[::-1] if reverse else list(programs)
    return {name: programs[name]() for name in names}


def measure(model, batch_size, data, device, tidy_first=False):
    runs = in_turn({"cli": lambda: cli_fit_epochs(["--model", model, "--batch-size", str(batch_size)], data, device),
                    "tidy": lambda: tidy_epochs(model, batch_size, data, device)}, reverse=tidy_first)
    tidy = runs["tidy"]
    cli_epoch = steady_epoch(runs["cli"][0])
    tidy_epoch = sum(tidy["times"][1:3]) / 2
    return {"model": model, "batch": batch_size, "cli": cli_epoch, "tidy": tidy_epoch, "ratio": tidy_epoch / cli_epoch,
            "tidy_setup": f"{tidy['memory_format']}, {tidy['implementation']}", "cli_elapsed": runs["cli"][0],
            "order": "tidy, cli" if tidy_first else "cli, tidy"}


def summarize(rounds):
    """Per model and batch: the median of the rounds' seconds per epoch, and every round's ratio."""
    rows = []
    for key in dict.fromkeys((r["model"], r["batch"]) for r in rounds):
        mine = [r for r in rounds if (r["model"], r["batch"]) == key]
        cli = statistics.median(r["cli"] for r in mine)
        tidy = statistics.median(r["tidy"] for r in mine)
        rows.append({"model": key[0], "batch": key[1], "cli": cli, "tidy": tidy, "ratio": tidy / cli,
                     "ratios": [r["ratio"] for r in mine], "tidy_setup": mine[0]["tidy_setup"]})
    return rows


def print_table(rows, machine):
    print(f"\nEnd-to-end seconds per epoch (train + test evaluation + checkpoints + logs), {machine}")
    print("ratio = tidy PyTorch s/epoch / cli.py fit s/epoch (> 1: cli.py fit is faster); medians over rounds")
    print("| model | batch | cli.py fit s/epoch | tidy PyTorch s/epoch | ratio | each round's ratio "
          "| tidy loop's fastest setup |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rounds = ", ".join(f"{ratio:.2f}" for ratio in r["ratios"])
        print(f"| {r['model']} | {r['batch']} | {r['cli']:.1f} | {r['tidy']:.1f} | {r['ratio']:.2f} | {rounds} | "
              f"{r['tidy_setup']} |", flush=True)


def machine_name(device):
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")


@click.command()
@click.option("--models", default="cnn,resnet_lite,inception_lite", show_default=True)
@click.option("--batch-size", type=int, default=None, help="Default: each model's original batch size.")
@click.option("--data", default=DEFAULT_DATA, show_default=True, help="Any --data source of cli.py.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Repetitions, alternating which program goes first (the table: the median).")
def main(models, batch_size, data, device, rounds):
    results = []
    for index in range(rounds):
        for model in models.split(","):
            print(f"round {index + 1}/{rounds}, {model}: cli.py fit and the tidy loop, 3 epochs each ...",
                  file=sys.stderr, flush=True)
            results.append(measure(model, batch_size or ORIGINAL_BATCH[model], data, device,
                                   tidy_first=index % 2 == 1))
            print(f"  {results[-1]}", file=sys.stderr, flush=True)
    print_table(summarize(results), machine_name(device))


if __name__ == "__main__":
    main()
