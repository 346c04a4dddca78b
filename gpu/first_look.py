"""gpu/gpu_first.sh's runs, and lines of its results file.

    python -m gpu.first_look env                        # Python, torch, CUDA, cuDNN, the GPUs, Keras, TensorFlow
    python -m gpu.first_look fit TIMES CLI_ARGS...      # `cli.py CLI_ARGS...` (a fit) timing its training in TIMES
    python -m gpu.first_look run LABEL LOG_DIR TIMES    # the run under LOG_DIR in one line

An epoch's time in metrics.csv includes its evaluation (10,000 test images in gpu/gpu_first.sh's
runs): `fit` runs the same command with one more callback, which records each epoch's training
time alone, from the epoch's start to the start of its evaluation (the GPU's queued work
included: it waits for the GPU at both ends), so that the images/s of `run` are training's.
"""

import csv
import glob
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys


def version(module, distributions):
    """The installed version of an importable module, or why there is none."""
    if importlib.util.find_spec(module) is None:
        return "not importable"
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            pass
    return "of unknown version"


def env():
    import torch

    print(f"- Python {platform.python_version()} ({sys.executable}), {platform.machine()}")
    print(f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.get_num_threads()} CPU threads")
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            print(f"- cuda:{index} {props.name}, compute capability {props.major}.{props.minor}, "
                  f"{props.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
    else:
        print("- no CUDA GPU visible to torch")
    print(f"- keras {version('keras', ['keras'])}, torchvision {version('torchvision', ['torchvision'])}, "
          f"numpy {version('numpy', ['numpy'])}, tensorflow {version('tensorflow', ['tensorflow', 'tensorflow-cpu'])}")


def training_time(path):
    """A Keras callback that writes to `path` the seconds of each epoch's training (JSON)."""
    import time

    import keras
    import torch

    def synchronize():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    class TrainingTime(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self.start = [], None

        def on_epoch_begin(self, epoch, logs=None):
            synchronize()
            self.start = time.perf_counter()

        def on_test_begin(self, logs=None):
            if self.start is not None:  # the epoch's first evaluation
                synchronize()
                self.seconds.append(time.perf_counter() - self.start)
                self.start = None
                with open(path, "w") as handle:
                    json.dump({"train_s": self.seconds}, handle)

        def on_epoch_end(self, epoch, logs=None):  # an epoch without evaluation
            self.on_test_begin()

    return TrainingTime()


def fit(times, *args):
    from keras_cifar.cli import cli
    from keras_cifar.train import trainer

    make_callbacks = trainer.make_callbacks

    def with_training_time(*positional, **named):
        callbacks, nan_guard = make_callbacks(*positional, **named)
        return [*callbacks, training_time(times)], nan_guard

    trainer.make_callbacks = with_training_time
    cli.main(args=list(args), prog_name="cli.py")


def run(label, log_dir, times):
    (summary_path,) = glob.glob(os.path.join(log_dir, "*", "summary.json"))
    with open(summary_path) as handle:
        summary = json.load(handle)
    with open(os.path.join(os.path.dirname(summary_path), "metrics.csv")) as handle:
        last = list(csv.DictReader(handle))[-1]
    with open(times) as handle:
        train_s = json.load(handle)["train_s"][-1]
    print(f"{label} on {summary['device_name']}: accuracy {summary['final_accuracy']:.2%} after {summary['epochs']} "
          f"epochs (best {summary['best_accuracy']:.2%}); first step {summary['first_step_s']:.1f} s, last epoch "
          f"{float(last['epoch_time_s']):.2f} s of which training {train_s:.2f} s "
          f"({summary['train_images_per_epoch'] / train_s:.0f} training images/s, evaluation excluded)")


if __name__ == "__main__":
    {"env": env, "fit": fit, "run": run}[sys.argv[1]](*sys.argv[2:])
