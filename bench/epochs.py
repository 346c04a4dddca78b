"""End-to-end seconds per epoch: `cli.py fit` against a tidy plain PyTorch loop.

What a user meets: a steady epoch of the real command, with its evaluation of the test set,
checkpoints, metrics.csv and TensorBoard logs, is the wall time of `cli.py fit --epochs 3` minus
that of `--epochs 1`, halved (start-up, data loading and graph capture cancel out). The yardstick
is `bench.torch_loop.TidyRun` on the same data, batch size and threads: the mean of its epochs 2
and 3, each a training epoch plus the test set's evaluation. The three runs of a model are
interleaved (fit 1 epoch, tidy loop, fit 3 epochs), so drift of the machine falls on both.

    python -m bench.epochs --models cnn,resnet_lite,inception_lite
    python -m bench.epochs --models cnn --batch-size 128
"""

import os
import subprocess
import sys
import tempfile
import time

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "cifar10-jpeg.tar.gz")
ORIGINAL_BATCH = {"cnn": 32, "resnet_lite": 32, "inception_lite": 16, "googlenet": 32, "resnet18": 32}
TORCH_OPTIMIZER = {"cnn": ("adam", 1e-3), "resnet_lite": ("adam", 1e-3), "inception_lite": ("adam", 1e-3),
                   "googlenet": ("adam", 1e-4), "resnet18": ("sgd", 1e-3)}


def time_cli_fit(model, epochs, batch_size, data, device, extra=()):
    """Wall seconds of `cli.py fit` in a fresh process, and the run's per-epoch log."""
    with tempfile.TemporaryDirectory() as logs:
        command = [sys.executable, os.path.join(REPO, "cli.py"), "fit", "--model", model, "--epochs", str(epochs),
                   "--batch-size", str(batch_size), "--data", data, "--log-dir", logs, "--device", device, *extra]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        elapsed = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return elapsed


def tidy_epochs(model, batch_size, data, device, epochs=3, probe_steps=30):
    """Seconds of each of `epochs` epochs (train + test evaluation) of the tidy loop, in its fastest
    memory format and optimizer implementation (probed first on `probe_steps` steps), in a fresh
    process like the CLI's."""
    code = f"""
import json, time, torch
import keras_cifar
from keras_cifar.data import load_cifar
from keras_cifar.train.device import set_precision
from bench.torch_loop import fastest_tidy_run
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
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(model, batch_size, data, device):
    one = time_cli_fit(model, 1, batch_size, data, device)
    tidy = tidy_epochs(model, batch_size, data, device)
    three = time_cli_fit(model, 3, batch_size, data, device)
    cli_epoch = (three - one) / 2
    tidy_epoch = sum(tidy["times"][1:3]) / 2
    return {"model": model, "batch": batch_size, "cli": cli_epoch, "tidy": tidy_epoch, "ratio": tidy_epoch / cli_epoch,
            "tidy_setup": f"{tidy['memory_format']}, {tidy['implementation']}", "cli_1": one, "cli_3": three}


def print_table(rows, machine):
    print(f"\nEnd-to-end seconds per epoch (train + test evaluation + checkpoints + logs), {machine}")
    print("ratio = tidy PyTorch s/epoch / cli.py fit s/epoch (> 1: cli.py fit is faster)")
    print("| model | batch | cli.py fit s/epoch | tidy PyTorch s/epoch | ratio | tidy loop's fastest setup "
          "| cli.py fit 1 / 3 epochs wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['cli']:.1f} | {r['tidy']:.1f} | {r['ratio']:.2f} | "
              f"{r['tidy_setup']} | {r['cli_1']:.0f} / {r['cli_3']:.0f} |", flush=True)


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
def main(models, batch_size, data, device):
    rows = []
    for model in models.split(","):
        print(f"{model}: cli.py fit 1 epoch, tidy loop 3 epochs, cli.py fit 3 epochs ...", file=sys.stderr,
              flush=True)
        rows.append(measure(model, batch_size or ORIGINAL_BATCH[model], data, device))
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    print_table(rows, machine_name(device))


if __name__ == "__main__":
    main()
