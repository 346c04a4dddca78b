"""Device, precision and seeding of a run."""

import keras
import torch

from keras_cifar.errors import UsageError


def select_device(requested):
    """"auto" | "cpu" | "cuda" -> the torch device name that Keras will use."""
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise UsageError(
            "`device='cuda'` was requested, but PyTorch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}). Use `device='cpu'` or `device='auto'`."
        )
    if requested == "auto":
        return "cuda" if cuda else "cpu"
    return requested


def describe_device(device):
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({torch.get_num_threads()} threads)"


POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def set_precision(mixed_precision, device):
    if mixed_precision == "fp16" and not device.startswith("cuda"):
        raise UsageError(
            "`mixed_precision='fp16'` needs a CUDA GPU; on the CPU use `mixed_precision='bf16'` or "
            "`mixed_precision='none'`."
        )
    keras.mixed_precision.set_global_policy(POLICIES[mixed_precision])
    if device.startswith("cuda"):
        # TF32 matmuls and convolutions, and cuDNN's autotuner for fixed-size batches.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def seed_everything(seed):
    keras.utils.set_random_seed(seed)
