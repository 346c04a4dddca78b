"""End-to-end seconds per epoch: `cli.py fit` against a tidy plain PyTorch loop, as a user waits for it.

The figure (the "end-to-end" columns): per model, the wall time of a whole `cli.py fit --epochs 3`
process minus that of a `cli.py fit --epochs 1` process, halved. That is the cost of a steady epoch
with everything a user waits for and everything that grows with the epochs: training, the test
set's evaluation, the checkpoint, metrics.csv, state.json, TensorBoard events, Keras's loop between
them, and whatever at the end of a run grows with its length. Start-up (imports, data, graph
capture), the first epoch's warm-up and the end of the run (final evaluation, reports, exit) are
in both processes and cancel.

The yardstick, `pytorch_reference.torch_loop.TidyRun` (data, batch size and threads the same, in
whichever memory format and optimizer implementation it probes fastest), is measured the same
way: a 3-epoch process minus a 1-epoch process, halved, each epoch its training and its test
evaluation. The same method on both sides is the fair one: anything that grows with the number of
epochs counts on both, whatever clock either keeps, and the two figures carry the same kind of
noise (two processes each). The tidy loop writes no checkpoint or log: it is what the product's
epoch, writes included, is held against.

Each round runs the four processes (`interleaved`, bench/timing.py: the order reverses every
other round, so the drift of a shared machine falls on all); the table lists every round, and the
headline figures are medians over rounds (`--rounds`, at least 3 for a figure worth quoting). The
data set's array cache is prepared before the first round, in a process of its own.
Alongside: the epoch clock, the figure this benchmark gave before (`cli.py fit`'s steady epoch from
the `wall_s` column of metrics.csv, the mean of epochs 2 and 3 of the 3-epoch run, against the tidy
loop's epochs 2 and 3 timed inside its process).

The second table (`--breakdown`, on by default) is where each steady epoch of `cli.py fit` goes,
from the run's own timing (summary.json's `time_parts_s`, written by the run's callbacks; see
keras_cifar/train/callbacks.py `RunTimes`): training, evaluation, the checkpoint's .keras file,
state.json, the links and removals, metrics.csv, TensorBoard, the other callbacks and Keras's loop
between them, each the mean of epochs 2 and 3 of the 3-epoch run (median over rounds), with the
tidy loop's training and evaluation (timed in its process) beside them. The third
is each process's phases (start-up, preparation, each epoch, the final evaluation and reports, the
exit) for the 1- and 3-epoch runs: what the end-to-end figure holds beyond the epochs themselves.

    python -m bench.epochs --rounds 3                       # cnn, resnet_lite, inception_lite
    python -m bench.epochs --models resnet_lite --rounds 3 --train-images 10000 --eval-images 10000
    python -m bench.epochs --rounds 3 --json rounds.json     # every round's figures kept too
    python -m bench.epochs --rounds 3 --baseline ../before   # and another checkout's cli.py fit beside it
"""

import csv
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import click

from bench.timing import in_order, interleaved

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "cifar10-jpeg.tar.gz")
ORIGINAL_BATCH = {"cnn": 32, "resnet_lite": 32, "inception_lite": 16, "googlenet": 32, "resnet18": 32}
TORCH_OPTIMIZER = {"cnn": ("adam", 1e-3), "resnet_lite": ("adam", 1e-3), "inception_lite": ("adam", 1e-3),
                   "googlenet": ("adam", 1e-4), "resnet18": ("sgd", 1e-3)}
# The parts of an epoch in the breakdown: (summary.json's key in time_parts_s.epochs, column title).
EPOCH_PARTS = (("train", "training"), ("evaluation", "evaluation"), ("checkpoint.save", "checkpoint .keras"),
               ("checkpoint.state", "state.json"), ("checkpoint.links", "links, removals"),
               ("checkpoint.metrics_csv", "metrics.csv"), ("tensorboard", "TensorBoard"),
               ("callbacks", "other callbacks"), ("rest", "Keras's loop"))
# A run's phases in the order they happen: (key, title); start-up and exit are measured from outside.
RUN_PHASES = (("startup", "start-up (imports)"), ("prepare", "data, model, run folder"),
              ("fit_start", "fit set-up"), ("first_epoch", "epoch 1"), ("later_epochs", "epochs 2.."),
              ("fit_end", "fit's end (train-end hooks)"), ("final_evaluation", "final evaluation"),
              ("final_summaries", "final TensorBoard summaries"), ("exit", "summary.json, exit"))


def cli_fit_epochs(args, data, device, epochs=3, data_dir=None, checkout=REPO):
    """`cli.py fit ARGS` for `epochs` epochs in a fresh process. -> a dict: `process_s` (its wall
    time, launch to exit), `wall_s` (the metrics.csv column: seconds from the first step to each
    epoch's end), `images` (training images per epoch) and `parts` (summary.json's time_parts_s)
    with the start-up and exit seen from here (`startup`, `exit`). `checkout`: the keras-cifar
    checkout whose cli.py runs (with its own package: Python imports from the script's folder first)."""
    with tempfile.TemporaryDirectory() as logs:
        command = [sys.executable, os.path.join(checkout, "cli.py"), "fit", *args, "--epochs", str(epochs),
                   "--data", data, "--log-dir", logs, "--device", device]
        command += ["--data-dir", data_dir] if data_dir else []
        launched = time.time()
        result = subprocess.run(command, capture_output=True, text=True, cwd=checkout)
        ended = time.time()
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        (run,) = glob.glob(os.path.join(logs, "*", ""))
        with open(os.path.join(run, "metrics.csv")) as file:
            elapsed = [float(row["wall_s"]) for row in csv.DictReader(file)]
        with open(os.path.join(run, "summary.json")) as file:
            summary = json.load(file)
    parts = summary["time_parts_s"]
    phases = dict(parts["run"], startup=parts["started_at"] - launched, exit=ended - parts["written_at"])
    return {"process_s": ended - launched, "wall_s": elapsed, "images": summary["train_images_per_epoch"],
            "epochs": parts["epochs"], "phases": phases, "load": os.getloadavg()[0]}


def image_arguments(limits, test_flag="--eval-images"):
    """The flags that limit the training and test images (`limits`: train, test; None for all),
    the test set's flag named `test_flag` (cli.py's --eval-images, airbench's --test-images)."""
    return [argument for flag, value in zip(("--train-images", test_flag), limits) if value
            for argument in (flag, str(value))]


def warm_data_cache(data, data_dir=None):
    """Prepares the data set's array cache (cli.py's first run of a source decodes every image) in a
    process of its own, before the first round: otherwise the first program to run pays for it."""
    code = ("import keras_cifar; from keras_cifar.data import load_cifar; "
            f"load_cifar({data!r}, {data_dir!r}, log=lambda m: None)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def steady_epoch(elapsed):
    """Mean of epochs 2 and 3 from cumulative seconds at each epoch's end."""
    return (elapsed[2] - elapsed[0]) / 2


def tidy_epochs(model, batch_size, data, device, epochs=3, probe_steps=30, data_dir=None, limits=(None, None)):
    """The tidy loop for `epochs` epochs (each a training epoch and the test set's evaluation), in
    its fastest memory format and optimizer implementation (probed first on `probe_steps` steps),
    in a fresh process like the CLI's. -> `process_s` (launch to exit), `times` (each epoch, timed
    inside the process; `evaluations`: their evaluations), `memory_format`, `implementation`. `limits`: the
    training and test images
    to keep (cli.py's --train-images, --eval-images: the same random subsets)."""
    code = f"""
import json, time, torch
import keras_cifar
from keras_cifar.data import load_cifar
from keras_cifar.train.device import set_precision
from pytorch_reference.torch_loop import fastest_tidy_run
set_precision("none", {device!r})  # TF32 and cuDNN autotuning on a GPU, as the product
data = load_cifar({data!r}, {data_dir!r}, log=lambda m: None)
data.limit({limits[0]!r}, {limits[1]!r}, 0)  # cli.py fit's default seed: the same images
optimizer, lr = {TORCH_OPTIMIZER[model]!r}
run = fastest_tidy_run({model!r}, data.train, data.test, {batch_size}, optimizer, lr,
                       device={device!r}, probe_steps={probe_steps})
def synchronize():
    if {device!r}.startswith("cuda"):
        torch.cuda.synchronize()
times, evaluations = [], []
for epoch in range({epochs}):
    start = time.perf_counter(); run.train_epoch(); synchronize()
    evaluation = time.perf_counter(); run.evaluate(); synchronize()
    times.append(time.perf_counter() - start); evaluations.append(time.perf_counter() - evaluation)
setup = run.memory_format == torch.channels_last and "channels_last" or "contiguous"
print(json.dumps({{"times": times, "evaluations": evaluations, "memory_format": setup,
                  "implementation": run.implementation}}))
"""
    launched = time.time()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    ended = time.time()
    if result.returncode:
        raise RuntimeError(f"tidy loop failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]), process_s=ended - launched,
                load=os.getloadavg()[0])


def mean_parts(epochs):
    """{part: mean seconds} over the steady epochs (2 and later) of a run's time_parts_s epochs,
    with `cycle` and `outside` (the cycle less training and evaluation)."""
    steady = epochs[1:]
    keys = {key for epoch in steady for key in epoch if key != "epoch"}
    parts = {key: statistics.mean(epoch.get(key, 0.0) for epoch in steady) for key in keys}
    parts["outside"] = parts["cycle"] - parts.get("train", 0.0) - parts.get("evaluation", 0.0)
    return parts


def run_phases(run):
    """A cli run's phases in seconds (RUN_PHASES' keys, `unaccounted` for what none of them holds)."""
    phases = dict(run["phases"])
    cycles = [epoch["cycle"] for epoch in run["epochs"]]
    phases["first_epoch"], phases["later_epochs"] = cycles[0], sum(cycles[1:])
    phases["unaccounted"] = run["process_s"] - sum(phases.get(key, 0.0) for key, _ in RUN_PHASES)
    return phases


def describe_checkout(checkout):
    """A checkout as the tables name it: its folder and commit."""
    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return f"{os.path.basename(os.path.normpath(checkout))} ({commit or 'no git'})"


def measure(model, batch_size, data, device, rounds, data_dir=None, limits=(None, None), baseline=None):
    """`rounds` interleaved rounds of the four processes (six with `baseline`: another checkout's
    cli.py fit, 3 and 1 epochs); -> every round's figures and their medians."""
    args = ["--model", model, "--batch-size", str(batch_size), *image_arguments(limits)]
    programs = {
        "cli 3 epochs": lambda: cli_fit_epochs(args, data, device, 3, data_dir),
        "cli 1 epoch": lambda: cli_fit_epochs(args, data, device, 1, data_dir),
        "tidy 3 epochs": lambda: tidy_epochs(model, batch_size, data, device, 3, data_dir=data_dir, limits=limits),
        "tidy 1 epoch": lambda: tidy_epochs(model, batch_size, data, device, 1, data_dir=data_dir, limits=limits),
    }
    if baseline:
        programs["baseline 3 epochs"] = lambda: cli_fit_epochs(args, data, device, 3, data_dir, checkout=baseline)
        programs["baseline 1 epoch"] = lambda: cli_fit_epochs(args, data, device, 1, data_dir, checkout=baseline)
    warm_data_cache(data, data_dir)
    runs = interleaved(programs, rounds, label=f"{model}: ")
    rows = []
    for index in range(rounds):
        cli3, cli1 = runs["cli 3 epochs"][index], runs["cli 1 epoch"][index]
        tidy3, tidy1 = runs["tidy 3 epochs"][index], runs["tidy 1 epoch"][index]
        rows.append({
            "cli": (cli3["process_s"] - cli1["process_s"]) / 2, "tidy": (tidy3["process_s"] - tidy1["process_s"]) / 2,
            "cli3": cli3["process_s"], "cli1": cli1["process_s"], "tidy3": tidy3["process_s"],
            "tidy1": tidy1["process_s"], "cli_clock": steady_epoch(cli3["wall_s"]),
            "tidy_clock": sum(tidy3["times"][1:3]) / 2, "parts": mean_parts(cli3["epochs"]),
            "tidy_evaluation": sum(tidy3["evaluations"][1:3]) / 2,
            "phases3": run_phases(cli3), "phases1": run_phases(cli1), "first": in_order(programs, index)[0],
            "cli_wall_s": [cli3["wall_s"], cli1["wall_s"]], "tidy_times": [tidy3["times"], tidy1["times"]],
            # the machine's 1-minute load average as each process ended: about 2 when only this benchmark runs
            "load": max(run["load"] for run in (cli3, cli1, tidy3, tidy1))})
        rows[-1]["ratio"] = rows[-1]["tidy"] / rows[-1]["cli"]
        rows[-1]["clock_ratio"] = rows[-1]["tidy_clock"] / rows[-1]["cli_clock"]
        if baseline:
            base3, base1 = runs["baseline 3 epochs"][index], runs["baseline 1 epoch"][index]
            rows[-1]["baseline"] = (base3["process_s"] - base1["process_s"]) / 2
            rows[-1]["baseline_ratio"] = rows[-1]["baseline"] / rows[-1]["cli"]
            rows[-1]["load"] = max(rows[-1]["load"], base3["load"], base1["load"])
    median = lambda key: statistics.median(row[key] for row in rows)  # noqa: E731
    setup = runs["tidy 3 epochs"][0]
    compared = {"baseline": median("baseline"), "baseline_ratio": median("baseline_ratio"),
                "baseline_name": describe_checkout(baseline)} if baseline else {}
    return {**compared, "model": model, "batch": batch_size, "rounds": rows, "cli": median("cli"), "tidy": median("tidy"),
            "ratio": median("ratio"), "cli_clock": median("cli_clock"), "tidy_clock": median("tidy_clock"),
            "clock_ratio": median("clock_ratio"), "tidy_evaluation": median("tidy_evaluation"),
            "tidy_train": statistics.median(row["tidy_clock"] - row["tidy_evaluation"] for row in rows),
            "parts": {key: statistics.median(row["parts"].get(key, 0.0) for row in rows)
                      for key in {key for row in rows for key in row["parts"]}},
            "phases3": {key: statistics.median(row["phases3"][key] for row in rows) for key in rows[0]["phases3"]},
            "phases1": {key: statistics.median(row["phases1"][key] for row in rows) for key in rows[0]["phases1"]},
            "tidy_setup": f"{setup['memory_format']}, {setup['implementation']}"}


def print_table(rows, machine):
    print(f"\nEnd-to-end seconds per epoch, {machine}")
    print("(wall of a 3-epoch process - wall of a 1-epoch process) / 2, for cli.py fit (training, evaluation, "
          "checkpoint, logs) and the tidy PyTorch loop (training, evaluation); ratio = tidy / cli.py fit "
          "(> 1: cli.py fit is faster); medians over rounds. Epoch clock: cli.py fit's metrics.csv wall_s and the "
          "tidy loop's in-process epoch, epochs 2 and 3 of the 3-epoch runs.")
    print("| model | batch | cli.py fit s/epoch | tidy PyTorch s/epoch | ratio | each round's ratio "
          "| epoch clock: cli.py fit | tidy | ratio | tidy loop's fastest setup |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        each = ", ".join(f"{row['ratio']:.2f}" for row in r["rounds"])
        print(f"| {r['model']} | {r['batch']} | {r['cli']:.2f} | {r['tidy']:.2f} | **{r['ratio']:.2f}** | {each} | "
              f"{r['cli_clock']:.2f} | {r['tidy_clock']:.2f} | {r['clock_ratio']:.2f} | {r['tidy_setup']} |")
    if any("baseline" in r for r in rows):
        print("\nThis checkout against --baseline (another checkout's cli.py fit, measured the same way in the same "
              "rounds); ratio = baseline / this (> 1: this checkout is faster)")
        print("| model | this checkout s/epoch | baseline | baseline s/epoch | ratio | each round's ratio |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            each = ", ".join(f"{row['baseline_ratio']:.2f}" for row in r["rounds"])
            print(f"| {r['model']} | {r['cli']:.2f} | {r['baseline_name']} | {r['baseline']:.2f} | "
                  f"**{r['baseline_ratio']:.2f}** | {each} |")
    print("\nEvery round (process wall times in s; first: the program that started the round; load: the highest "
          "1-minute load average as its processes ended, about 2 when nothing else runs)")
    print("| model | round | first | cli.py fit 3 epochs | 1 epoch | s/epoch | tidy 3 epochs | 1 epoch | s/epoch "
          "| ratio | epoch clock: cli.py fit | tidy | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for index, row in enumerate(r["rounds"], 1):
            print(f"| {r['model']} | {index} | {row['first'].split()[0]} | {row['cli3']:.2f} | {row['cli1']:.2f} | "
                  f"{row['cli']:.2f} | {row['tidy3']:.2f} | {row['tidy1']:.2f} | {row['tidy']:.2f} | "
                  f"{row['ratio']:.2f} | {row['cli_clock']:.2f} | {row['tidy_clock']:.2f} | {row['load']:.1f} |")
    sys.stdout.flush()


def print_breakdown(rows):
    print("\nWhere a steady epoch of cli.py fit goes (s per epoch, mean of epochs 2 and 3 of the 3-epoch run, "
          "median over rounds; from summary.json's time_parts_s). outside = the epoch less training and evaluation")
    titles = " | ".join(title for _, title in EPOCH_PARTS)
    print(f"| model | {titles} | epoch | outside |")
    print("|---|" + "---|" * (len(EPOCH_PARTS) + 2))
    for r in rows:
        parts = r["parts"]
        cells = " | ".join(f"{parts.get(key, 0.0):.3f}" for key, _ in EPOCH_PARTS)
        print(f"| {r['model']} | {cells} | {parts['cycle']:.3f} | {parts['outside']:.3f} |")
    for r in rows:  # the tidy loop's epoch, timed in its process, beside it
        cells = " | ".join(["-"] * (len(EPOCH_PARTS) - 2))
        print(f"| {r['model']}: tidy loop | {r['tidy_train']:.3f} | {r['tidy_evaluation']:.3f} | {cells} | "
              f"{r['tidy_clock']:.3f} | - |")
    print("\nThe phases of each cli.py fit process (s, median over rounds); (3 - 1) / 2 is each phase's share of "
          "the end-to-end figure")
    print("| model | phase | 1 epoch | 3 epochs | (3 - 1) / 2 |")
    print("|---|---|---|---|---|")
    for r in rows:
        for key, title in (*RUN_PHASES, ("unaccounted", "unaccounted (between the phases)")):
            one, three = r["phases1"].get(key, 0.0), r["phases3"].get(key, 0.0)
            print(f"| {r['model']} | {title} | {one:.2f} | {three:.2f} | {(three - one) / 2:+.2f} |")
    sys.stdout.flush()


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
@click.option("--train-images", type=int, default=None, help="Train on this many images (quick checks; default all).")
@click.option("--eval-images", type=int, default=None, help="Evaluate on this many images (default all).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Repetitions, alternating which program goes first (the table: the median).")
@click.option("--breakdown/--no-breakdown", default=True, show_default=True,
              help="Also print where each epoch of cli.py fit goes, and each process's phases.")
@click.option("--json", "json_path", default=None, help="Also write every round's figures to this JSON file.")
@click.option("--baseline", default=None, type=click.Path(exists=True, file_okay=False),
              help="Another keras-cifar checkout (e.g. `git worktree add ../before <commit>`) whose cli.py fit runs "
                   "in the same rounds, with this environment's packages: a change measured side by side.")
def main(models, batch_size, data, data_dir, train_images, eval_images, device, rounds, breakdown, json_path,
         baseline):
    if baseline and not os.path.isfile(os.path.join(baseline, "cli.py")):
        raise click.BadParameter(f"{baseline} holds no cli.py: not a keras-cifar checkout", param_hint="--baseline")
    rows = []
    for model in models.split(","):
        print(f"{model}: cli.py fit and the tidy loop, 3 and 1 epochs each, {rounds} round(s) ...", file=sys.stderr,
              flush=True)
        rows.append(measure(model, batch_size or ORIGINAL_BATCH[model], data, device, rounds, data_dir,
                            (train_images, eval_images), baseline and os.path.abspath(baseline)))
        if json_path:  # after each model, so that a long run's finished models are kept
            with open(json_path, "w") as file:
                json.dump({"machine": machine_name(device), "models": rows}, file, indent=1)
    print_table(rows, machine_name(device))
    if breakdown:
        print_breakdown(rows)


if __name__ == "__main__":
    main()
