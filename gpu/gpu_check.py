"""The GPU check: is every path of keras-cifar correct and fast on this CUDA GPU?

    python -m gpu.gpu_check                 # all checks, about 5 minutes on one GPU
    python -m gpu.gpu_check --models cnn,resnet18 --precisions float32,bf16   # fewer rows
    python -m gpu.gpu_check --models googlenet --precisions float32 --jit graph,graph-compiled,off
    python -m gpu.gpu_check --device cpu --steps 8 --resize-to 32  # a smoke run without a GPU

It needs only torch, keras and pyyaml (synthetic data: no TensorFlow, no downloads; resnet18
starts from random weights; its plain-PyTorch column needs torchvision, and says so without it),
and prints one table, a row as soon as it is done: for each
model, precision (`float32` is the product's `none`) and `jit` setting (`graph`: the forward
graph captured by torch.export, replayed op by op, the product's default; `graph-compiled`: that
graph compiled by torch.compile, Inductor's fused kernels; `off`: eager Keras), the seconds of the
first three steps (graph capture, cuDNN autotuning; with `graph-compiled` the compilation), training images/s and peak GPU memory of
`fit`'s step, the same step in plain PyTorch beside it (channels_last, fused Adam or SGD,
torch.autocast and GradScaler where the product uses mixed precision), and four checks.

Images/s are timed within one `fit` call after a warm-up one, from the start of its first step to
the end of its last, over as many epochs of `--steps` steps as make `fit`'s own set-up (before the
first step and after the last) under 5% of the call (at most about 30 s of steps: the `fit set-up`
column gives its seconds and share, "over 5%" where that cap cut it short); plain PyTorch runs as
many steps. The checks:

- host syncs/step: synchronisations in 20 steady-state steps of `fit` with the run's callbacks,
  counted by `torch.cuda.set_sync_debug_mode` in the driver and by `pytorch_reference.host_syncs` in Python;
  must be 0 with a captured graph (eager Keras, `--jit off`, makes tensors of Python numbers in
  its Rescaling layer: counted, not checked);
- capture vs eager: over 20 training steps, the largest difference between a step with the
  captured forward and the same step in eager Keras from the same weights, optimizer state, batch
  and dropout seed, relative to the largest weight (cuDNN deterministic, TF32 off for this
  comparison); must stay within rounding (1e-5 in float32, 1e-2 in mixed precision); none with
  `--jit off`;
- GPU -> CPU checkpoint: a `.keras` file saved on the GPU, reloaded on the CPU, gives the same
  logits (relative 1e-3 in float32, 3e-2 in mixed precision). Both sides compute in float32 or
  the same mixed policy: the GPU's logits are taken with TF32 off (cuDNN deterministic), because
  TF32 rounds inputs to 10 mantissa bits, about 5e-4 relative per product, which 224x224 googlenet
  and resnet18 can accumulate past 1e-3 with no bug at all;
- the row runs without error (out of memory included).

It exits with status 1 when any check fails. bf16 rows are skipped on GPUs without bf16.
"""

import contextlib
import math
import os
import sys
import tempfile
import time
import warnings

import click
import numpy as np
import torch

import keras_cifar  # noqa: F401  (selects Keras's torch backend first)
import keras  # noqa: E402

from keras_cifar.data.dataset import Split  # noqa: E402
from keras_cifar.data.loader import TensorLoader  # noqa: E402
from keras_cifar.train.callbacks import EpochSeeder, EpochStats, NaNGuard, RunCallbacks  # noqa: E402
from keras_cifar.train.config import resolve_config  # noqa: E402
from keras_cifar.train.device import set_precision, set_tf32, tf32_enabled  # noqa: E402
from keras_cifar.train.trainer import build_model, compile_model  # noqa: E402
from pytorch_reference import originals as reference  # noqa: E402
from pytorch_reference.host_syncs import HostSyncCounter  # noqa: E402

PRECISIONS = ("none", "bf16", "fp16")
PRECISION_NAMES = {"float32": "none"}  # the flag's other spelling of the product's `none`
JITS = ("graph", "graph-compiled", "off")  # the `jit` settings a row can run (compile: no captured graph to check)
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
TOLERANCE = {"capture": {"none": 1e-5, "bf16": 1e-2, "fp16": 1e-2}, "reload": {"none": 1e-3, "bf16": 3e-2, "fp16": 3e-2}}
SETUP_SHARE = 0.05  # the most of a timed fit that its set-up may take
MOST_TIMED_S = 30  # seconds of timed steps at most, per row
ORIGINAL = {"cnn": ("adam", 1e-3), "inception_lite": ("adam", 1e-3), "resnet_lite": ("adam", 1e-3),
            "googlenet": ("adam", 1e-4), "resnet18": ("sgd", 1e-3)}


def synthetic(count, seed=0):
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, count))


def product_config(model, precision, device, batch_size, resize_to=None, jit="graph"):
    overrides = dict(model=model, mixed_precision=precision, device=device, batch_size=batch_size, jit=jit)
    if model == "resnet18":
        overrides["weights"] = "none"  # no download here
    if resize_to and model in ("googlenet", "resnet18"):
        overrides["resize_to"] = resize_to
    return resolve_config(None, overrides)


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Window(keras.callbacks.Callback):
    """Counts host synchronisations from the start of step `first` to the start of step `last`."""

    def __init__(self, device, first, last):
        super().__init__()
        self.device, self.first, self.last = device, first, last
        self.python = HostSyncCounter()
        self.driver = 0
        self._stack = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.first:
            self._stack = contextlib.ExitStack()
            self._stack.enter_context(self.python)
            if self.device.startswith("cuda"):
                self._caught = self._stack.enter_context(warnings.catch_warnings(record=True))
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode(1)  # warn on every synchronising CUDA call
        elif batch == self.last and self._stack is not None:
            if self.device.startswith("cuda"):
                torch.cuda.set_sync_debug_mode(0)
                self.driver = sum("synchroniz" in str(w.message) for w in self._caught)
            self._stack.close()
            self._stack = None


def fit_steps(model, loader, callbacks=(), epochs=1):
    """Runs `fit` for `epochs` epochs of the loader's steps with the run's step callbacks."""
    base = [EpochSeeder(0, loader), EpochStats(), NaNGuard(check_seconds=float("inf")), *callbacks]
    model.fit(loader.as_keras_input(), epochs=epochs, verbose=0, shuffle=False,
              callbacks=RunCallbacks(base, model=model, epochs=epochs, steps=len(loader), verbose=0))


def set_jit(model, jit):
    model.set_graph_capture(jit != "off", compiled=jit == "graph-compiled")


class StepClock(keras.callbacks.Callback):
    """The seconds of a `fit` call's `total` steps: from the start of the first to the end of the
    last (device work included; what runs between epochs counts), and to the end of step `first`
    (the first steps: graph capture, cuDNN autotuning). What `fit` does before its first step and
    after its last is its set-up. The device is waited for only at those three points."""

    def __init__(self, device, total, first=3):
        super().__init__()
        self.device, self.total, self.first = device, total, first
        self.start = self.steps_s = self.first_s = None
        self.steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.start is None:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps in (self.first, self.total):
            synchronize(self.device)
            seconds = time.perf_counter() - self.start
            self.first_s = seconds if self.steps == self.first else self.first_s
            self.steps_s = seconds if self.steps == self.total else self.steps_s


def timed_fit(model, loader, device, callbacks=(), epochs=1):
    """(the fit's StepClock, its whole time: set-up and steps)."""
    clock = StepClock(device, epochs * len(loader))
    synchronize(device)
    start = time.perf_counter()
    fit_steps(model, loader, [clock, *callbacks], epochs)
    synchronize(device)
    return clock, time.perf_counter() - start


def epochs_for(setup_s, step_s, steps, share=SETUP_SHARE, most_s=MOST_TIMED_S):
    """Epochs of `steps` steps of `step_s` seconds after which a fit's set-up of `setup_s` seconds
    is under `share` of its time, if that takes at most about `most_s` seconds of steps."""
    needed = setup_s * (1 - share) / share / step_s  # steps
    return max(1, min(math.ceil(needed / steps), math.floor(most_s / (step_s * steps)) or 1))


def product_row(model_name, precision, device, batch_size, steps, resize_to, jit="graph"):
    row = {}
    config = product_config(model_name, precision, device, batch_size, resize_to, jit)
    set_precision(config.mixed_precision, device)
    with keras.device(device):
        model = build_model(config, 10)
        loader = TensorLoader(synthetic(batch_size * steps), batch_size, shuffle=True, seed=0, device=device)
        compile_model(model, config, len(loader))
        set_jit(model, jit)
        window = Window(device, first=3, last=min(23, steps - 1))
        # The warm-up (capture, autotuning) and the sync count, then a fit long enough that its set-up
        # is under SETUP_SHARE of it: its steps alone give images/s.
        warm, warm_s = timed_fit(model, loader, device, [window])
        row["first_steps_s"] = warm.first_s
        row["syncs"] = (window.driver + window.python.total) / (window.last - window.first)
        step_s = (warm.steps_s - warm.first_s) / max(steps - warm.first, 1)
        epochs = epochs_for(warm_s - warm.steps_s, step_s, steps)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        clock, fit_s = timed_fit(model, loader, device, epochs=epochs)
        row["timed_steps"] = clock.steps
        row["images_per_s"] = clock.steps * batch_size / clock.steps_s
        row["fit_s"], row["setup_s"], row["setup_share"] = fit_s, fit_s - clock.steps_s, (fit_s - clock.steps_s) / fit_s
        row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
        row["reload"] = checkpoint_roundtrip(model, device)
    row["capture"] = None if jit == "off" else capture_vs_eager(config, device, batch_size, jit=jit)
    row["torch_images_per_s"] = plain_pytorch_images_per_s(model_name, precision, device, batch_size, steps,
                                                           resize_to, row["timed_steps"])
    return row


def plain_pytorch_images_per_s(*args):
    """`torch_row(*args)`, or None where the original network needs a torchvision this machine lacks
    (resnet18 is torchvision's): the row keeps its checks without the comparison."""
    try:
        return torch_row(*args)
    except ModuleNotFoundError as error:
        if error.name != "torchvision":
            raise
        print(f"plain PyTorch skipped: {error}", file=sys.stderr, flush=True)
        return None


def checkpoint_roundtrip(model, device):
    images = torch.as_tensor(synthetic(16, seed=3).images)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        with deterministic(device):  # float32 as on the CPU: TF32 off
            here = keras.ops.convert_to_numpy(model(images.to(device), training=False)).astype("float64")
        with keras.device("cpu"):
            there = keras.saving.load_model(path)
            there_logits = keras.ops.convert_to_numpy(there(images, training=False)).astype("float64")
    return float(np.abs(here - there_logits).max() / max(np.abs(here).max(), 1e-12))


@contextlib.contextmanager
def deterministic(device):
    """Full float32 (TF32 off) and deterministic cuDNN algorithms, through the product's own TF32
    switch (`keras_cifar.train.device`), then the settings as they were."""
    if not device.startswith("cuda"):
        yield
        return
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, tf32_enabled()
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    set_tf32(False)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        set_tf32(saved[2])


def capture_vs_eager(config, device, batch_size, steps=20, jit="graph"):
    """The largest difference between a captured and an eager training step taken from the same
    weights, optimizer state and dropout seed, over `steps` steps (relative to the largest
    weight). Each step starts both models from the captured model's state, so the rounding of one
    step is measured, not how far the chaos of training carries two runs apart."""
    data = synthetic(batch_size * steps, seed=1)
    images = torch.as_tensor(data.images).to(device)
    labels = torch.as_tensor(data.labels).to(device)
    worst = 0.0
    with deterministic(device), keras.device(device):
        models = []
        for captured in (True, False):
            model = build_model(config, 10)
            compile_model(model, config, steps)
            set_jit(model, jit if captured else "off")
            models.append(model)
        captured_model, eager_model = models
        eager_model.set_weights(captured_model.get_weights())
        for step in range(steps):
            batch = slice(step * batch_size, (step + 1) * batch_size)
            if step:
                eager_model.set_weights(captured_model.get_weights())
                for mine, theirs in zip(eager_model.optimizer.variables, captured_model.optimizer.variables):
                    mine.assign(theirs)
            for model in (captured_model, eager_model):
                torch.manual_seed(step)  # the same dropout masks
                model.train_on_batch(images[batch], labels[batch])
            after = [captured_model.get_weights(), eager_model.get_weights()]
            largest = max(float(np.abs(w).max()) for w in after[1])
            worst = max(worst, max(float(np.abs(a - b).max()) for a, b in zip(*after)) / largest)
    return worst


def torch_row(model_name, precision, device, batch_size, steps, resize_to, timed):
    """The same training step in plain PyTorch, as a careful user would write it on this device:
    images/s over `timed` steps through `steps` batches."""
    optimizer_name, lr = ORIGINAL[model_name]
    module = reference.create_reference(model_name).to(device, memory_format=torch.channels_last)
    fused = {"fused": True} if device.startswith("cuda") else {}
    optimizer = (torch.optim.Adam(module.parameters(), lr=lr, **fused) if optimizer_name == "adam"
                 else torch.optim.SGD(module.parameters(), lr=lr, **fused))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    try:
        scaler = torch.amp.GradScaler(device.split(":")[0], enabled=precision == "fp16")
    except (AttributeError, TypeError):  # torch before 2.3
        scaler = torch.cuda.amp.GradScaler(enabled=precision == "fp16")
    data = synthetic(batch_size * steps, seed=2)
    images = torch.as_tensor(data.images).to(device)
    labels = torch.as_tensor(data.labels).to(device)

    def step(index):
        batch = images[index * batch_size:(index + 1) * batch_size]
        size = resize_to if resize_to and model_name in ("googlenet", "resnet18") else "default"
        x = reference.preprocess_nchw(batch, model_name, size).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(module(x), labels[index * batch_size:(index + 1) * batch_size])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for index in range(min(5, steps)):
        step(index)
    synchronize(device)
    start = time.perf_counter()
    for index in range(timed):
        step(index % steps)
    synchronize(device)
    return timed * batch_size / (time.perf_counter() - start)


def check_row(model_name, precision, device, batch_size, steps, resize_to=None, jit="graph"):
    row = {"model": model_name, "precision": precision, "jit": jit}
    if precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return dict(row, skipped="this GPU has no bf16")
    if precision == "fp16" and not device.startswith("cuda"):
        return dict(row, skipped="fp16 needs a GPU")
    try:
        row.update(product_row(model_name, precision, device, batch_size, steps, resize_to, jit))
    except OUT_OF_MEMORY:
        return dict(row, error="out of GPU memory", failed=["memory"])
    except Exception as error:  # a broken path is a failed check, reported in the table
        return dict(row, error=f"{type(error).__name__}: {error}"[:200], failed=["error"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    failed = []
    if row["syncs"] != 0 and jit != "off":  # eager Keras makes tensors of Python numbers (Rescaling's)
        failed.append("syncs")
    if row["capture"] is not None and not row["capture"] <= TOLERANCE["capture"][precision]:
        failed.append("capture")
    if not row["reload"] <= TOLERANCE["reload"][precision]:
        failed.append("reload")
    return dict(row, failed=failed)


HEADER = ("| model | precision | jit | first 3 steps s | timed steps | keras-cifar img/s | plain PyTorch img/s | ratio "
          "| fit set-up | peak GPU MiB | host syncs/step | capture vs eager | GPU->CPU reload | result |")


def print_header(device_name):
    print(f"GPU check on {device_name}; torch {torch.__version__}, keras {keras.__version__}")
    print(HEADER)
    print("|---" * HEADER.count(" | ") + "|---|", flush=True)


def format_row(r):
    start = f"| {r['model']} | {r['precision']} | {r['jit']} |"
    if "skipped" in r:
        return start + " - |" * 10 + f" skipped: {r['skipped']} |"
    if "error" in r:
        return start + " - |" * 10 + f" FAILED: {r['error']} |"
    verdict = "ok" if not r["failed"] else "FAILED: " + ", ".join(r["failed"])
    capture = "-" if r["capture"] is None else f"{r['capture']:.1e}"
    syncs = f"{r['syncs']:g}" + (" (eager: not checked)" if r["jit"] == "off" else "")
    setup = f"{r['setup_s']:.3f} s, {r['setup_share']:.1%}" + (" (over 5%)" if r["setup_share"] >= SETUP_SHARE else "")
    if r["torch_images_per_s"] is None:
        torch_cells = "- (needs torchvision) | - |"
    else:
        torch_cells = f"{r['torch_images_per_s']:.0f} | {r['images_per_s'] / r['torch_images_per_s']:.2f} |"
    return (start + f" {r['first_steps_s']:.2f} | {r['timed_steps']} | {r['images_per_s']:.0f} | "
            f"{torch_cells} {setup} | "
            f"{r['peak_mib']:.0f} | {syncs} | {capture} | {r['reload']:.1e} | {verdict} |")


def comma_list(allowed, aliases=None):
    """A click callback: "a,b" -> ["a", "b"], each one of `allowed` (or an alias of one)."""
    aliases = aliases or {}

    def parse(context, parameter, value):
        values = [aliases.get(item, item) for item in value.split(",") if item]
        unknown = [item for item in values if item not in allowed]
        if unknown or not values:
            raise click.BadParameter(f"must be a comma-separated list of {', '.join([*allowed, *aliases])}. "
                                     f"Received: {value!r}")
        return values

    return parse


@click.command()
@click.option("--models", default="cnn,googlenet,resnet18", show_default=True,
              callback=comma_list(tuple(ORIGINAL)))
@click.option("--precisions", default=",".join(PRECISIONS), show_default=True,
              callback=comma_list(PRECISIONS, PRECISION_NAMES), help="float32 (the same as none), bf16, fp16.")
@click.option("--jit", "jits", default="graph", show_default=True, callback=comma_list(JITS),
              help="The `jit` settings to run each row with: graph (the captured graph op by op), graph-compiled "
                   "(compiled by torch.compile), off (eager); several compare them.")
@click.option("--device", default="cuda", show_default=True, help="cuda, cuda:N, or cpu for a smoke run.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="The originals' batch size.")
@click.option("--steps", type=int, default=60, show_default=True,
              help="Steps of the warm-up fit, and the batches of data that the timed fit repeats as epochs.")
@click.option("--resize-to", type=int, default=None,
              help="googlenet/resnet18 input size (default: their 224; a CPU smoke run takes 32).")
def main(models, precisions, jits, device, batch_size, steps, resize_to):
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"No CUDA GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}).")
    if steps < 5:
        raise SystemExit(f"--steps must be at least 5. Received: --steps {steps}")
    device_name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"
    print_header(device_name)
    rows = []
    for model_name in models:
        for precision in precisions:
            for jit in jits:
                print(f"{model_name} {precision} {jit} ...", file=sys.stderr, flush=True)
                rows.append(check_row(model_name, precision, device, batch_size, steps, resize_to, jit))
                print(format_row(rows[-1]), flush=True)  # a time-out keeps the rows already done
    failed = [r for r in rows if r.get("failed")]
    if failed:
        print(f"\n{len(failed)} of {len(rows)} rows failed a check.")
        sys.exit(1)
    print(f"\nAll {len(rows)} rows passed.")


if __name__ == "__main__":
    main()
