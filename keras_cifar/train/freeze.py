"""`WhiteningBiasFreeze`: `airbench94`'s whitening bias trains for its first epochs only."""

import keras

from keras_cifar.optim.param_groups import frozen_bias


class WhiteningBiasFreeze(keras.callbacks.Callback):
    """At the start of each epoch the model's whitening bias (`param_groups.frozen_bias`) is
    trainable for the first `bias_epochs` epochs and not after (on torch its tensor stops
    requiring gradients: the backward pass skips what only it needed, as airbench's
    `requires_grad=False`); trainable again when training ends. A resumed run starts with the
    epoch it resumes at. Models without one are left alone."""

    def on_epoch_begin(self, epoch, logs=None):
        frozen = frozen_bias(self.model)
        if frozen is not None:
            bias, epochs = frozen
            self._set(bias, epoch < epochs)

    def on_train_end(self, logs=None):
        frozen = frozen_bias(self.model)
        if frozen is not None:
            self._set(frozen[0], True)

    def _set(self, variable, trainable):
        if variable.trainable == trainable:
            return
        variable.trainable = trainable
        if not trainable and keras.backend.backend() == "torch":
            variable.value.grad = None
        self.model.refresh_step_plan()
