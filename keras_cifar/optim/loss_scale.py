"""Keras's dynamic loss scaling for float16, without its host synchronisations."""

import keras
import torch

from keras_cifar._backend import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras's dynamic loss scaling for float16 (the same variables, schedule and checkpoint
    format) without its host synchronisations: the gradients are unscaled and checked for
    infinities on the device, the inner optimizer's fused update skips a non-finite step on the
    device, and the scale is updated there (torch's GradScaler kernels). Keras's own decides
    with `ops.cond`, which reads the verdict back to the host every step."""

    def apply(self, grads, trainable_variables=None):
        if not hasattr(self.inner_optimizer, "host_iterations"):  # not a keras_cifar optimizer
            return super().apply(grads, trainable_variables)
        if not self.built:
            with keras.name_scope(self.name):
                self.build(trainable_variables)
            self.built = True
        present = [grad for grad in grads if grad is not None]
        found_inf = torch.zeros((), device=present[0].device)
        inverse_scale = self.dynamic_scale.value.double().reciprocal().float()
        torch._amp_foreach_non_finite_check_and_unscale_(present, found_inf, inverse_scale)
        self.inner_optimizer.apply(grads, trainable_variables, found_inf=found_inf)
        torch._amp_update_scale_(self.dynamic_scale.value, self.step_counter.value, found_inf, 2.0, 0.5,
                                 self.dynamic_growth_steps)

    def model_state_averages(self):
        return self.inner_optimizer.model_state_averages()
