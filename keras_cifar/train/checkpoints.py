"""Loading `.keras` checkpoints with clear errors."""

import os
import warnings
import zipfile

from keras_cifar.errors import CheckpointError


def load_checkpoint(path, compile=False):
    import keras

    import keras_cifar.optim  # noqa: F401  (registers the optimizers and schedules)

    if not os.path.exists(path):
        raise CheckpointError(f"The checkpoint {path!r} does not exist.")
    if os.path.isdir(path):
        raise CheckpointError(f"The checkpoint {path!r} is a folder; pass a run folder or a .keras file.")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path!r} is not a Keras model file (.keras): it is truncated, corrupt, or another kind of file."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(path, compile=compile)
    except Exception as error:
        raise CheckpointError(
            f"Cannot load the checkpoint {path!r} ({type(error).__name__}: {str(error).splitlines()[0][:300]}). "
            "It is truncated, corrupt, or was not saved by keras-cifar."
        ) from None
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise CheckpointError(f"The checkpoint {path!r} does not hold a single-input image classifier.")
    return model


def check_compatible(model, path, num_classes, model_name=None):
    """Raises CheckpointError if `model` cannot classify 32x32 RGB images into `num_classes`."""
    input_shape = tuple(model.inputs[0].shape[1:])
    if input_shape != (32, 32, 3):
        raise CheckpointError(f"The checkpoint {path!r} takes images of shape {input_shape}, not 32x32 RGB.")
    outputs = model.outputs[0].shape[-1]
    if outputs != num_classes:
        raise CheckpointError(
            f"The checkpoint {path!r} was built for {outputs} classes; this data has {num_classes}."
        )
    if model_name is not None and model.name != model_name:
        raise CheckpointError(
            f"The checkpoint {path!r} holds a {model.name!r} model, not {model_name!r}."
        )


def load_optimizer_state(model, path):
    """Loads the optimizer state of the checkpoint `path` into `model`'s optimizer, built: the
    compiled optimizer of the run (a lookahead's model state cannot come from a saved config)."""
    model.optimizer.build(model.trainable_variables)
    try:
        with warnings.catch_warnings():  # a state that does not fit is skipped, then refused
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except ValueError:
        raise CheckpointError(_NOT_RESTORED.format(path=path)) from None


_NOT_RESTORED = ("The optimizer state in {path!r} does not fit this version's optimizer (it holds other variables: "
                 "an earlier version saved it), so resuming would restart the learning-rate schedule and momentum "
                 "at step 0. Start the run again without resuming.")


def check_optimizer_restored(model, path, completed_epochs):
    """Raises CheckpointError if the optimizer state of a checkpoint being resumed did not load.
    Keras skips all of it (with a warning) when the saved variables do not match the
    optimizer's, as in a checkpoint of an earlier version whose lookahead did not yet average
    the batch-norm statistics: the run would restart its schedule and momentum from step 0."""
    import keras

    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or completed_epochs < 1:
        return
    if int(keras.ops.convert_to_numpy(optimizer.iterations)) == 0:
        raise CheckpointError(_NOT_RESTORED.format(path=path))
