"""Selects Keras's torch backend before anything imports keras or tensorflow.

Importing tensorflow before keras with `KERAS_BACKEND=torch` crashes the
process (tensorflow imports keras, whose torch backend then loads triton after
TF's libraries). Every module of this package that needs TF imports
`keras_cifar` first, and `keras_cifar/__init__.py` imports this module first.
"""

import os
import sys

_REQUIRED_BACKEND = "torch"


def configure():
    requested = os.environ.get("KERAS_BACKEND", _REQUIRED_BACKEND)
    if requested != _REQUIRED_BACKEND:
        raise ImportError(
            f"keras_cifar runs on Keras's torch backend, but KERAS_BACKEND={requested!r} "
            "is set. Unset it or set KERAS_BACKEND=torch."
        )
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != _REQUIRED_BACKEND:
        raise ImportError(
            "keras was imported with another backend before keras_cifar. "
            "Import keras_cifar first, or set KERAS_BACKEND=torch."
        )
    os.environ["KERAS_BACKEND"] = _REQUIRED_BACKEND
    # TF is only used for tf.data, TFDS and summaries: keep it quiet and off any GPU.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


configure()

import keras  # noqa: E402,F401  (must follow configure())
