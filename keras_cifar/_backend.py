"""Selects Keras's torch backend before anything imports keras or tensorflow.

Importing tensorflow before keras with `KERAS_BACKEND=torch` crashes the
process (tensorflow imports keras, whose torch backend then loads triton after
TF's libraries). Every module of this package that needs TF imports
`keras_cifar` first, and `keras_cifar/__init__.py` imports this module first.

keras_cifar trains on the torch backend only. A process on another backend
(`KERAS_BACKEND=tensorflow` or `jax`, or keras imported with its default
backend before keras_cifar) gets the layers registered, so that checkpoints
load and predict there; training raises `require_torch`'s error.
"""

import os
import sys

TORCH = "torch"
PACKAGE = "keras_cifar"  # the package of this project's Keras-registered classes, as saved files name them


def configure():
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", TORCH)
    # TF is only used for tf.data, TFDS and summaries: keep it quiet and off any GPU.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


configure()

import keras  # noqa: E402  (must follow configure())


def on_torch():
    return keras.backend.backend() == TORCH


def require_torch(what):
    """Raises a clear error when this process runs Keras on another backend than torch."""
    if on_torch():
        return
    from keras_cifar.errors import UsageError

    requested = os.environ.get("KERAS_BACKEND")
    why = f"KERAS_BACKEND={requested!r}" if requested else "keras was imported before keras_cifar"
    raise UsageError(
        f"{what} runs on Keras's torch backend only, but this process runs Keras on "
        f"{keras.backend.backend()!r} ({why}). Set KERAS_BACKEND=torch, or leave it unset, and import "
        "keras_cifar before keras. On every backend keras_cifar's checkpoints load and predict."
    )
