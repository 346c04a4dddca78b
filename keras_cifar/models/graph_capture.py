"""Graph capture of a model's forward pass: the one place that knows how it is captured.

The first batch of each kind (training or inference, dtype, device, dtype policy) is traced once
with `torch.jit.trace` through the model's own Keras `__call__`, and later steps replay that
graph: the same torch ops on the same variables, so losses, gradients, batch-norm statistics and
dropout are those of eager Keras, without Keras's per-layer Python. torch 2.14 deprecates
TorchScript (no removal date yet); another mechanism (torch.compile, CUDA graphs of the whole
step) replaces this class without touching the rest of the code.

TorchScript's executor would optimise a replayed graph at its second run and again for each new
input shape (the last partial batch, evaluation, predict): it rewrites ops (a dense layer's
`addmm` into `mm` and `add`: one kernel more), differentiates the graph itself, and on CUDA fuses
kernels, with their own rounding. The replays run unoptimised, op for op what eager Keras runs,
unless the model asks for fusion (`fused=True`, the `jit` setting `trace-fused`): on a GPU they
then compute what the CPU tests verified. The setting covers the backward pass too, whose graph
the executor would optimise when it first runs.

Capturing runs the forward once, which would draw from the random generators (dropout's masks):
they are restored, so that capturing draws nothing and a resumed run, which captures again at
another step, draws the masks an uninterrupted run draws.
"""

import warnings

import keras
import torch

from keras_cifar import keras_internals


class _Forward(torch.nn.Module):
    def __init__(self, model, training):
        super().__init__()
        self.model = model
        self.training_flag = training

    def forward(self, x):
        return self.model(x, training=self.training_flag)


def capturable(model):
    """Seeded random layers draw their seed as a Python int: a trace would freeze it."""
    return not any(keras_internals.has_fixed_seed(layer) for layer in keras_internals.all_layers(model))


class Fuser:
    """A context in which TorchScript optimises and fuses the replays on CUDA (`fused`), or runs
    them op by op, unoptimised; on the CPU it never fuses."""

    def __init__(self, fused):
        self.fused = fused
        self._saved = []

    def __enter__(self):
        self._saved.append((torch._C._jit_can_fuse_on_cpu(), torch._C._jit_can_fuse_on_gpu(),
                            torch.jit.optimized_execution(self.fused)))
        torch._C._jit_override_can_fuse_on_cpu(False)
        torch._C._jit_override_can_fuse_on_gpu(self.fused)
        self._saved[-1][2].__enter__()
        return self

    def __exit__(self, *exc_info):
        cpu, gpu, optimized = self._saved.pop()
        optimized.__exit__(*exc_info)
        torch._C._jit_override_can_fuse_on_cpu(cpu)
        torch._C._jit_override_can_fuse_on_gpu(gpu)


class ForwardGraphs:
    """Captured forward graphs of one model, by kind of batch; `graphs(x, training)` runs one.
    Its `fuser` is the context the replays, and the backward passes through them, run in."""

    def __init__(self, model, fused=False):
        self.model = model
        self.fuser = Fuser(fused)
        self.graphs = {}
        # The state tensors (batch-norm statistics), kept once: walking the layers for them every
        # step would cost more Python than the small models' arithmetic.
        self.state = [variable.value for variable in model.non_trainable_variables]

    def __call__(self, x, training):
        key = (training, x.dtype, x.device, x.ndim, keras.config.dtype_policy().name)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = self._capture(x, training)
        with self.fuser:
            outputs = graph(x)
        if training:
            self._detach_state()
        return outputs

    def _capture(self, x, training):
        # Tracing runs the forward once: keep its batch-norm updates out of the state, so that
        # the first step updates the statistics once, as every later step does.
        # It also draws from the random generators (dropout's masks): a run that captures at another
        # step than another run (a resumed run captures again) would then draw different masks.
        # Capturing draws nothing: the generators of the CPU and of the batch's device are restored.
        saved = [tensor.detach().clone() for tensor in self.state]
        devices = [x.device] if x.device.type != "cpu" else []
        with warnings.catch_warnings(), torch.random.fork_rng(devices, device_type=x.device.type):
            # torch.jit.trace is deprecated in favour of torch.compile, which cannot yet compile
            # Keras's layer machinery without graph breaks.
            warnings.simplefilter("ignore")
            graph = torch.jit.trace(_Forward(self.model, training), (x,), check_trace=False)
        with torch.no_grad():
            for tensor, value in zip(self.state, saved):
                tensor.copy_(value)
        return graph

    def _detach_state(self):
        """A replayed graph writes the new batch-norm statistics with an in-place copy that
        autograd records (the trace does not keep Keras's `no_grad` around it), which leaves
        them attached to the step's graph: memory held from step to step, and Keras fails
        when it next collects the variables as torch parameters. Make them leaves again."""
        for tensor in self.state:
            if tensor.grad_fn is not None:
                tensor.detach_()
