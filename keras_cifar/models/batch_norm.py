"""Batch normalisation computed by torch's own kernel, under its own name and under Keras's."""

import keras
from keras import layers, ops

from keras_cifar._backend import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchBatchNorm(layers.BatchNormalization):
    """`BatchNormalization` computed by torch's own batch-norm kernel (`torch.nn.BatchNorm2d`'s
    semantics: one fused pass, the moving variance updated with the unbiased batch variance).

    Keras's layer computes the moments and the normalisation as separate element-wise ops in
    float32, casting bfloat16/float16 activations up and back down: on a CPU that is a fifth of
    a small network's training step. Where torch's kernel does not apply (another backend, a
    channels-last layout, a mask, renormalisation, or `--sync-bn`, which replaces the moments)
    the layer is Keras's."""

    def _fused_applies(self, inputs, mask):
        from keras_cifar.keras_internals import batch_norm_moments_replaced

        return (keras.backend.backend() == "torch" and mask is None and not self.renorm and len(inputs.shape) == 4
                and self.axis == 1 and not batch_norm_moments_replaced(self))

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import torch.nn.functional as F

        training = bool(training) and self.trainable
        outputs = F.batch_norm(
            inputs,
            self.moving_mean.value,
            self.moving_variance.value,
            self.gamma.value if self.scale else None,
            self.beta.value if self.center else None,
            training=training,
            momentum=1.0 - self.momentum,
            eps=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(TorchBatchNorm):
    """`TorchBatchNorm` under Keras's class name: the batch norm of the GoogLeNet and ResNet18
    blocks. Keras files address the weights of a block's sub-layers by class name
    (`.../_residual/batch_normalization_1/vars`), so this name keeps checkpoints saved when
    these layers were Keras's own loading into today's blocks, weights unchanged."""
