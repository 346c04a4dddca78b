"""Muon for the convolution kernels, torch.optim's SGD for the rest (airbench94_muon)."""

import keras
import torch

from keras_cifar._backend import PACKAGE
from keras_cifar.optim.sgd import TorchSGD


def newton_schulz(matrix, steps=3, eps=1e-7, dtype=torch.bfloat16):
    """airbench94_muon's quintic Newton-Schulz iteration, in `dtype` (airbench's bfloat16):
    `matrix` (2-D) with its singular values pushed towards 1 (roughly into [0.5, 1.5]), its
    singular vectors kept."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = matrix.to(dtype)
    x = x / (x.norm() + eps)  # the largest singular value at most 1
    tall = matrix.size(0) > matrix.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchMuon(TorchSGD):
    """airbench94_muon's optimizer pair as one Keras optimizer: Muon for every trainable
    convolution kernel (4-D), `TorchSGD` (with its parameter groups) for every other variable.

    Muon's step for a kernel (Keller Jordan's, as in airbench94_muon): momentum buffer
    `b = m * b + g` (Nesterov: `u = g + m * b`, else `u = b`); the kernel rescaled to a norm of
    sqrt(output channels); then `w -= lr * NS(u)`, where NS is `newton_schulz` of `u` as an
    (output channels) x (inputs) matrix. The orthogonalised update does not depend on the
    gradient's scale, so a mean or a summed loss give the same step. Muon's learning rate is
    `muon_lr_scale` times the schedule's, and follows it; its buffers are optimizer variables,
    saved in checkpoints."""

    ns_dtype = torch.bfloat16  # Newton-Schulz's precision (airbench's); float32 in tests that compare runs

    def __init__(self, learning_rate=0.01, muon_lr_scale=1.0, muon_momentum=0.6, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if isinstance(muon_lr_scale, bool) or not isinstance(muon_lr_scale, (int, float)) or muon_lr_scale <= 0:
            raise ValueError(f"`muon_lr_scale` must be a positive number. Received: muon_lr_scale={muon_lr_scale!r}")
        if isinstance(muon_momentum, bool) or not isinstance(muon_momentum, (int, float)) \
                or not 0 <= muon_momentum < 1:
            raise ValueError(f"`muon_momentum` must be in [0, 1). Received: muon_momentum={muon_momentum!r}")
        self.muon_lr_scale = float(muon_lr_scale)
        self.muon_momentum = float(muon_momentum)

    @staticmethod
    def takes_muon_step(variable):
        return variable.trainable and len(variable.shape) == 4

    def build(self, variables):
        super().build(variables)
        self._muon_buffers = {variable.path: self.add_variable_from_reference(variable, "muon_momentum")
                              for variable in variables if self.takes_muon_step(variable)}

    def apply(self, grads, trainable_variables=None, found_inf=None):
        if found_inf is not None:
            raise ValueError("TorchMuon does not take float16 loss scaling; train in bf16 or float32.")
        trainable_variables = self._built_for(trainable_variables)
        grads = list(grads)
        muon, others = self._split(trainable_variables)
        other_variables = [trainable_variables[i] for i in others]
        step = self._torch_step(other_variables)
        lr = self._learning_rate_now(step) * self.muon_lr_scale
        with torch.no_grad():
            for i in muon:
                self._muon_step(trainable_variables[i], grads[i], lr)
        super().apply([grads[i] for i in others], other_variables)

    def _split(self, variables):
        """(indices of the kernels Muon steps, indices of the rest), worked out once per variable list."""
        splits = self.__dict__.setdefault("_splits", {})
        key = tuple(id(variable) for variable in variables)
        if key not in splits:
            muon = [i for i, variable in enumerate(variables) if self.takes_muon_step(variable)]
            others = sorted(set(range(len(variables))) - set(muon))
            if not others:
                raise ValueError("TorchMuon needs at least one variable that is not a convolution kernel "
                                 "(its step count lives in the SGD part).")
            splits[key] = (muon, others)
        return splits[key]

    def _muon_step(self, variable, grad, lr):
        if grad is None:
            return
        weight = variable.value
        buffer = self._muon_buffers[variable.path].value
        buffer.mul_(self.muon_momentum).add_(grad)
        update = grad.add(buffer, alpha=self.muon_momentum) if self.nesterov else buffer
        outputs = weight.shape[-1]  # Keras's kernel layout: (kh, kw, in, out)
        weight.mul_(outputs ** 0.5 / weight.norm())
        orthogonal = newton_schulz(update.reshape(-1, outputs).T, dtype=self.ns_dtype).T.reshape(weight.shape)
        if isinstance(lr, torch.Tensor):
            weight.sub_(orthogonal.to(weight.dtype) * lr)
        else:
            weight.add_(orthogonal, alpha=-lr)

    def get_config(self):
        config = super().get_config()
        config.update(muon_lr_scale=self.muon_lr_scale, muon_momentum=self.muon_momentum)
        return config
