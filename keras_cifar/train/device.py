"""Device, precision and seeding of a run."""

import os
import re
import warnings

import keras
import torch

from keras_cifar.errors import UsageError

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
SLOW_ON_CPU = ("googlenet", "resnet18")  # 224x224 inputs: about 3 s per 32-image step on a 2-core CPU


def select_device(requested, model=None):
    """"auto" | "cpu" | "cuda" | "cuda:N" -> the torch device name that Keras will use."""
    if not re.fullmatch(DEVICE_PATTERN, requested):
        raise UsageError(f"`device` must be auto, cpu, cuda or cuda:N. Received: `device={requested!r}`")
    cuda = torch.cuda.is_available()
    found = f"torch {torch.__version__}, " + (f"built for CUDA {torch.version.cuda}" if torch.version.cuda
                                                else "a CPU-only build")
    if requested.startswith("cuda") and not cuda:
        raise UsageError(
            f"`device={requested!r}` was requested, but PyTorch sees no CUDA GPU on this machine ({found}). "
            "Use `device='cpu'` or `device='auto'`."
        )
    if requested.startswith("cuda:") and int(requested.split(":")[1]) >= torch.cuda.device_count():
        raise UsageError(
            f"`device={requested!r}` was requested, but PyTorch sees {torch.cuda.device_count()} GPU(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1} ({found})."
        )
    if requested == "auto":
        if not cuda and model in SLOW_ON_CPU:
            warnings.warn(
                f"No CUDA GPU found ({found}): training {model} at 224x224 on the CPU takes hours per epoch "
                "instead of minutes. Pass `device='cpu'` to silence this.", stacklevel=2)
        return "cuda" if cuda else "cpu"
    return requested


def describe_device(device):
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({torch.get_num_threads()} threads)"


POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def set_precision(mixed_precision, device, deterministic=False):
    """The dtype policy, and on a GPU the math modes: TF32 matmuls and convolutions and cuDNN's
    autotuner (fast, the default), or `deterministic`: full float32, deterministic algorithms,
    no autotuning (bit-reproducible, slower). -> the GPU settings in force, for the records."""
    if mixed_precision == "fp16" and not device.startswith("cuda"):
        raise UsageError(
            "`mixed_precision='fp16'` needs a CUDA GPU; on the CPU use `mixed_precision='bf16'` or "
            "`mixed_precision='none'`."
        )
    if mixed_precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise UsageError(
            f"`mixed_precision='bf16'`: {torch.cuda.get_device_name(torch.device(device))} has no bfloat16 "
            "support. Use `mixed_precision='fp16'` (with loss scaling) or `mixed_precision='none'`."
        )
    keras.mixed_precision.set_global_policy(POLICIES[mixed_precision])
    if not device.startswith("cuda"):
        return None
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    set_tf32(not deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    return gpu_settings(device)


def gpu_settings(device):
    """The GPU math modes in force (None on the CPU), as summary.json records them."""
    if not device.startswith("cuda"):
        return None
    return {"tf32": tf32_enabled(), "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "deterministic": torch.backends.cudnn.deterministic}


# TF32 is set and read through one API, `allow_tf32`, everywhere in keras-cifar. torch 2.9 added
# `fp32_precision`; once it is set, reading `allow_tf32` or `torch.get_float32_matmul_precision()`
# raises ("a mix of the legacy and new APIs"), and Inductor (`jit='compile'`) reads both, as do
# users' scripts. Setting `allow_tf32` keeps every getter readable, old and new, and brings
# `fp32_precision` into line, in every torch release.


def set_tf32(enabled):
    """TF32 for float32 matmuls (cuBLAS) and convolutions (cuDNN), on or off."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_enabled():
    return torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def seed_everything(seed):
    keras.utils.set_random_seed(seed)
