"""Lines of gpu/gpu_first.sh's results file.

    python -m gpu.first_look env                 # Python, torch, CUDA, cuDNN, the GPUs, Keras, TensorFlow
    python -m gpu.first_look run LABEL LOG_DIR   # the run under LOG_DIR in one line
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


def run(label, log_dir):
    (summary_path,) = glob.glob(os.path.join(log_dir, "*", "summary.json"))
    with open(summary_path) as handle:
        summary = json.load(handle)
    with open(os.path.join(os.path.dirname(summary_path), "metrics.csv")) as handle:
        last = list(csv.DictReader(handle))[-1]
    epoch_s = float(last["epoch_time_s"])
    print(f"{label} on {summary['device_name']}: accuracy {summary['final_accuracy']:.2%} after {summary['epochs']} "
          f"epochs (best {summary['best_accuracy']:.2%}); first step {summary['first_step_s']:.1f} s, last epoch "
          f"{epoch_s:.2f} s ({summary['train_images_per_epoch'] / epoch_s:.0f} training images/s)")


if __name__ == "__main__":
    {"env": env, "run": run}[sys.argv[1]](*sys.argv[2:])
