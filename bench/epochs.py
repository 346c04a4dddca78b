"""End-to-end seconds per epoch: `cli.py fit` against a tidy plain PyTorch loop.

What a user meets: a steady epoch of the real command, with its evaluation of the test set,
checkpoints, metrics.csv and TensorBoard logs. `cli.py fit --epochs 3` runs in a fresh process and
its steady epoch is the mean of epochs 2 and 3 from the `wall_s` column of the run's metrics.csv
(wall time from the first step to each epoch's end: start-up, data loading and graph capture fall
before the first step, and the first epoch's warm-up is left out). The yardstick is
`pytorch_reference.torch_loop.TidyRun` on the same data, batch size and threads, also 3 epochs in a fresh
process: the mean of its epochs 2 and 3, each a training epoch plus the test set's evaluation.
Rounds (`--rounds`) alternate which of the two runs first (bench/timing.py), so drift of the
machine falls on both; the table gives the medians.

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

from bench.timing import interleaved

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "cifar10-jpeg.tar.gz")
ORIGINAL_BATCH = {"cnn": 32, "resnet_lite": 32, "inception_lite": 16, "googlenet": 32, "resnet18": 32}
TORCH_OPTIMIZER = {"cnn": ("adam", 1e-3), "resnet_lite": ("adam", 1e-3), "inception_lite": ("adam", 1e-3),
                   "googlenet": ("adam", 1e-4), "resnet18": ("sgd", 1e-3)}


def cli_fit_epochs(args, data, device, epochs=3, data_dir=None):
    """`cli.py fit ARGS` for `epochs` epochs in a fresh process: its `wall_s` column (seconds
    from the first step to each epoch's end) and its training images per epoch."""
    with tempfile.TemporaryDirectory() as logs:
        command = [sys.executable, os.path.join(REPO, "cli.py"), "fit", *args, "--epochs", str(epochs),
                   "--data", data, "--log-dir", logs, "--device", device]
        command += ["--data-dir", data_dir] if data_dir else []
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


def tidy_epochs(model, batch_size, data, device, epochs=3, probe_steps=30, data_dir=None):
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
data = load_cifar({data!r}, {data_dir!r}, log=lambda m: None)
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


def measure(model, batch_size, data, device, rounds, data_dir=None):
    """`rounds` interleaved rounds of both programs; -> the medians, their ratio and every round's."""
    runs = interleaved({"cli": lambda: cli_fit_epochs(["--model", model, "--batch-size", str(batch_size)], data,
                                                      device, data_dir=data_dir),
                        "tidy": lambda: tidy_epochs(model, batch_size, data, device, data_dir=data_dir)},
                       rounds, label=f"{model}: ")
    cli = [steady_epoch(elapsed) for elapsed, _ in runs["cli"]]
    tidy = [sum(run["times"][1:3]) / 2 for run in runs["tidy"]]
    setup = runs["tidy"][0]
    return {"model": model, "batch": batch_size, "cli": statistics.median(cli), "tidy": statistics.median(tidy),
            "ratio": statistics.median(tidy) / statistics.median(cli),
            "ratios": [t / c for c, t in zip(cli, tidy)],
            "tidy_setup": f"{setup['memory_format']}, {setup['implementation']}"}


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
@click.option("--data-dir", default=None, help="Where TFDS prepares and caches the data (cli.py's --data-dir).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Repetitions, alternating which program goes first (the table: the median).")
def main(models, batch_size, data, data_dir, device, rounds):
    rows = []
    for model in models.split(","):
        print(f"{model}: cli.py fit and the tidy loop, 3 epochs each, {rounds} round(s) ...", file=sys.stderr,
              flush=True)
        rows.append(measure(model, batch_size or ORIGINAL_BATCH[model], data, device, rounds, data_dir))
    print_table(rows, machine_name(device))


if __name__ == "__main__":
    main()
