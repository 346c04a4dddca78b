"""What each lever of the training step is worth: milliseconds per step of `fit` with the run's
callbacks, each lever switched back to what stock Keras does, one at a time.

    python -m bench.step_levers --models resnet_lite,cnn --steps 200 --rounds 3

All variants run in this one process on the same synthetic batches (the step's cost does not
depend on pixel values), in turns: one epoch of `--steps` steps each, A B C ... then ... C B A,
for `--rounds` rounds after a warm-up round (bench/timing.py); the table gives the median.

Variants:
  product              the step `cli.py fit` runs: captured forward, lean loss and metrics,
                       torch.optim's fused update, RunCallbacks
  Keras CallbackList   the same callbacks in Keras's own CallbackList: every step's logs
                       converted to Python numbers for the batch hooks (in a thread pool
                       when every callback is marked async-safe, else in the training thread)
  Keras thread pool    no callbacks at all, so Keras hands every step's batch hooks and logs to
                       its thread pool (what the run's callbacks got before, all async-safe)
  generic step         Keras's loss and metric objects (`compute_loss`, `compute_metrics`)
                       instead of the lean step
  Keras Adam           Keras's own Adam update (per-variable Python, Keras's epsilon)
  no graph capture     eager Keras: every layer through `Layer.__call__`
  tidy PyTorch loop    not a lever: the same model, batches and optimizer in pytorch_reference.torch_loop's
                       TidyRun (channels_last, fused Adam), the yardstick of the end-to-end
                       benchmarks, measured in the same process and the same turns
"""

import tempfile
import time

import click
import numpy as np

import keras_cifar  # noqa: F401  (selects Keras's torch backend before keras is imported)
import keras  # noqa: E402
from bench.timing import interleaved, medians, ratio_table
from keras_cifar.data.dataset import Split
from keras_cifar.data.loader import TensorLoader
from keras_cifar.train.callbacks import RunCallbacks
from keras_cifar.train.config import resolve_config
from keras_cifar.train.trainer import build_model, compile_model, make_callbacks, new_run_state
from pytorch_reference.torch_loop import TidyRun

ORIGINAL_BATCH = {"cnn": 32, "resnet_lite": 32, "inception_lite": 16, "googlenet": 32, "resnet18": 32}
TIDY = "tidy PyTorch loop"
VARIANTS = ("product", "Keras CallbackList", "Keras thread pool", "generic step", "Keras Adam", "no graph capture",
            TIDY)


def synthetic_split(batch_size, steps):
    """The step's cost does not depend on pixel values: the same random batches for every variant."""
    rng = np.random.default_rng(0)
    return Split(rng.integers(0, 256, (batch_size * steps, 32, 32, 3), dtype=np.uint8),
                 rng.integers(0, 10, batch_size * steps))


class TidyVariant:
    """The tidy PyTorch loop's epoch on the same batches, with the settings `Variant` resolves."""

    def __init__(self, label, model_name, batch_size, steps, folder):
        config = resolve_config(None, {"model": model_name, "batch_size": batch_size})
        split = synthetic_split(batch_size, steps)
        self.label, self.steps = label, steps
        self.tidy = TidyRun(model_name, split, split, batch_size, config.optimizer, config.lr)

    def epoch(self):
        start = time.perf_counter()
        self.tidy.train_epoch()
        return (time.perf_counter() - start) / self.steps


class Variant:
    def __init__(self, label, model_name, batch_size, steps, folder):
        config = resolve_config(None, {"model": model_name, "batch_size": batch_size})
        split = synthetic_split(batch_size, steps)
        self.loader = TensorLoader(split, batch_size, shuffle=True, seed=0)
        self.model = build_model(config, 10)
        compile_model(self.model, config, len(self.loader))
        if label == "Keras Adam":
            self.model.compile(optimizer=keras.optimizers.Adam(config.lr), loss=self.model.loss,
                               metrics=["accuracy"])
        if label == "generic step":
            self.model.lean_step_applies = lambda: False
        self.model.set_graph_capture(label != "no graph capture")
        self.label, self.config, self.folder = label, config, folder

    def epoch(self):
        callbacks, _ = make_callbacks(self.config, tempfile.mkdtemp(dir=self.folder), new_run_state(), self.loader,
                                      eval_is_test=True)
        if self.label == "Keras thread pool":
            callbacks = []  # no callbacks: Keras dispatches every step's batch hooks to its thread pool
        elif self.label != "Keras CallbackList":
            callbacks = RunCallbacks(callbacks, model=self.model, epochs=1, steps=len(self.loader), verbose=2)
        start = time.perf_counter()
        keras_list = self.label in ("Keras CallbackList", "Keras thread pool")
        self.model.fit(self.loader.as_keras_input(), epochs=1, verbose=0 if keras_list else 2, callbacks=callbacks)
        return (time.perf_counter() - start) / len(self.loader)


@click.command()
@click.option("--models", default="resnet_lite,cnn,inception_lite", show_default=True)
@click.option("--steps", type=int, default=200, show_default=True)
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--batch-size", type=int, default=None, help="Default: each model's original batch size.")
def main(models, steps, rounds, batch_size):
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for model_name in models.split(","):
        with tempfile.TemporaryDirectory() as folder:
            batch = batch_size or ORIGINAL_BATCH[model_name]
            variants = [(TidyVariant if label == TIDY else Variant)(label, model_name, batch, steps, folder)
                        for label in VARIANTS]
            times = interleaved({variant.label: variant.epoch for variant in variants}, rounds, warmup=1,
                                label=f"{model_name}: ")
        print(f"\n{model_name}, batch {batch}: ms per training step (median of {rounds} "
              f"rounds of {steps} steps)")
        print(ratio_table(medians(times), "product", unit="ms/step", scale=1e3), flush=True)


if __name__ == "__main__":
    main()
