"""TensorFlow, imported here and nowhere else, and kept off every GPU.

TensorFlow serves only TFDS (data preparation) and TensorBoard summaries. A GPU build of
TensorFlow, if the user has one installed, would reserve nearly all GPU memory at its first op,
before torch trains: so the GPUs are hidden from it as it is first imported. Building models,
training from prepared arrays, `predict` and gpu/gpu_check.py never import it. Where it is not
installed (`installed()`), `fit(tensorboard=False)` trains and a local copy of the data is read
straight from its files.
"""

import importlib.util
import warnings

_hidden = False


def installed(name="tensorflow"):
    """Whether `name` can be imported, without importing it (TensorFlow takes seconds)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None in sys.modules
        return False


def import_tensorflow():
    """The `tensorflow` module, with no GPU visible to it."""
    import keras_cifar  # noqa: F401  (keras before tensorflow: the reverse order crashes)

    import tensorflow as tf

    global _hidden
    if not _hidden:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TF already initialised its devices: someone imported it before us
            if tf.config.get_visible_devices("GPU"):
                warnings.warn("TensorFlow was initialised before keras_cifar could hide the GPUs from it; it may "
                              "hold GPU memory that torch needs.", stacklevel=2)
        _hidden = True
    return tf


def import_tfds():
    """`tensorflow_datasets`, after `import_tensorflow`."""
    import_tensorflow()
    import tensorflow_datasets as tfds

    return tfds
