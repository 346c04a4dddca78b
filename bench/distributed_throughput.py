"""Training throughput of data-parallel `fit` steps: run under torchrun with 1, 2, ... processes.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 bench/distributed_throughput.py cnn 32 200

Each process trains `steps` steps of `batch` random images (the lean step of `fit`, graph capture,
gradients averaged by the bucketed all-reduce when there are several processes) through Keras
`fit` with the run's callbacks; rank 0 prints one JSON line: images/s per process and in total,
timed from step 20 to the last (a single process runs the same script without torchrun).
"""

import json
import sys
import tempfile
import time

import keras_cifar  # noqa: F401  (first: selects Keras's torch backend)
import keras
import numpy as np
import torch
from keras_cifar.data import Split, TensorLoader
from keras_cifar.train import distributed
from keras_cifar.train.callbacks import RunCallbacks
from keras_cifar.train.config import resolve_config
from keras_cifar.train.trainer import build_model, compile_model, make_callbacks, new_run_state

WARMUP = 20


class Clock(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == WARMUP:
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def main(model_name="cnn", batch=32, steps=200):
    batch, steps = int(batch), int(steps)
    options = {"resize_to": 32, "weights": "none"} if model_name in ("googlenet", "resnet18") else {}
    config = resolve_config(None, {"model": model_name, "batch_size": batch, "epochs": 1, "device": "cpu",
                                   **options})
    with distributed.session(config) as group, keras.device("cpu"):
        rng = np.random.default_rng(0)
        count = batch * steps * group.world_size
        split = Split(rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, count))
        loader = TensorLoader(split, batch, shuffle=True, device="cpu", rank=group.rank,
                              world_size=group.world_size)
        model = build_model(config, 10)
        compile_model(model, config, len(loader))
        model.set_graph_capture(True)
        distributed.prepare(model, config, group, echo=lambda message: None)
        with tempfile.TemporaryDirectory() as folder:
            callbacks, _ = make_callbacks(config, folder, new_run_state(), loader, eval_is_test=True)
            clock = Clock()
            model.fit(loader.as_keras_input(), epochs=1, verbose=0, shuffle=False,
                      callbacks=RunCallbacks(callbacks + [clock], model=model, epochs=1, steps=len(loader),
                                             verbose=0))
        per_process = (steps - WARMUP) * batch / clock.seconds
        rates = group.all_gather(per_process)
        if group.is_main:
            print(json.dumps({"model": model_name, "processes": group.world_size, "batch_per_process": batch,
                              "threads_per_process": torch.get_num_threads(),
                              "images_per_s_per_process": [round(r, 1) for r in rates],
                              "images_per_s_total": round(sum(rates), 1)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
