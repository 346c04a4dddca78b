"""One step's gradients of the Keras port against PyTorch's, from the same weights and real batch.

For each small model and batch, the worst relative error over the weights of the gradient of the
cross-entropy loss against PyTorch in float64, for: the Keras port (float32), the PyTorch original
(float32), and the PyTorch original with its weights moved by about one float32 ulp. A port that
computed something else would stand out from the two PyTorch columns; rounding flips a max-pool
choice between near-equal values now and then, which moves a few gradients in every column alike.
tests/test_pytorch_reference.py checks it on real batches; the table of docs/RESULTS-LOG.md came from
this module's former command line (bench/gradients.py at commit d3fdef3).
"""

import copy

import keras_cifar  # noqa: F401  (backend first)
import torch.nn.functional as F

from keras_cifar.models.convert import copy_torch_weights, keras_layers_by_name
from keras_cifar.train.config import resolve_config
from keras_cifar.train.trainer import build_model
from pytorch_reference.torch_loop import ReferenceRun, nudge_weights


def keras_layout(gradient):
    """A torch weight's gradient in the layout of its Keras variable."""
    if gradient.dim() == 4:
        return gradient.permute(2, 3, 1, 0)
    return gradient.T if gradient.dim() == 2 else gradient


def gradient_errors(model_name, images, labels, seed=0):
    """-> {"keras": e, "torch": e, "torch+ulp": e}: worst relative gradient error against float64 torch."""
    run = ReferenceRun(model_name, seed=seed)
    exact, perturbed = copy.deepcopy(run.module).double(), copy.deepcopy(run.module)
    nudge_weights(perturbed, seed + 1)
    model = build_model(resolve_config(None, {"model": model_name}), 10)
    copy_torch_weights(model, run.module)
    inputs = run.prepare(images)
    for module, x in ((run.module, inputs), (exact, inputs.double()), (perturbed, inputs)):
        F.cross_entropy(module(x), labels).backward()
    F.cross_entropy(model(images, training=True), labels).backward()
    keras_layers = keras_layers_by_name(model)
    errors = {"keras": 0.0, "torch": 0.0, "torch+ulp": 0.0}
    named = zip(run.module.named_parameters(), exact.parameters(), perturbed.parameters())
    for (path, ours32), ours64, nudged in named:
        module_path, kind = path.rsplit(".", 1)
        layer = keras_layers[module_path.replace(".", "_")]
        variable = layer.kernel if kind == "weight" else layer.bias
        truth = keras_layout(ours64.grad).float()
        candidates = {"keras": variable.value.grad, "torch": keras_layout(ours32.grad),
                      "torch+ulp": keras_layout(nudged.grad)}
        for key, gradient in candidates.items():
            errors[key] = max(errors[key], float((gradient - truth).norm() / truth.norm()))
    return errors
