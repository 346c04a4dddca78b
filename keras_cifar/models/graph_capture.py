"""Graph capture of a model's forward pass: the one place that knows how it is captured.

The first batch of each kind (training or inference, dtype, device, image shape, dtype policy)
is captured once with `torch.export` (non-strict: the model's own Keras `__call__` runs in
Python on fake tensors) into an FX graph of aten ops, with the batch size symbolic, so that the
last partial batch of an epoch replays the same graph. Later steps replay that graph on the
model's own variables: the ops eager Keras dispatches, in the same order, without Keras's
per-layer Python. Autograd records the replay as it records eager Keras, so gradients, batch-norm
statistics (updated in place by `batch_norm`) and dropout (drawn at each replay from torch's
generators) are those of eager Keras.

Before replay, the captured graph is tidied: the shape assertions that export records and
Keras's `.to()` calls that change nothing (no kernel in eager either) are dropped, and the
graph's inputs are bound to the live variables (export lifts them as detached aliases).

`compiled=True` (the `jit` setting `graph-compiled`) hands the tidied graph, captured per batch
size, to `torch.compile` (Inductor's fused kernels): meant for GPUs, where a small net's step is
bound by kernel launches. Its speed has not been measured on a CPU or a GPU yet.

Capturing runs the model's Python once on fake tensors; the random generators and the state
tensors are restored around it all the same, so that capturing draws nothing and changes
nothing, and a resumed run, which captures again at another step, draws the masks an
uninterrupted run draws.
"""

import warnings

import keras
import torch
import torch.fx

from keras_cifar import keras_internals

# Ops the tidied graph drops: export's shape and dtype assertions (no kernel).
_ASSERTIONS = {torch.ops.aten._assert_tensor_metadata.default}
# `.to()` overloads that return their input itself when dtype, device and layout already match.
_CONVERSIONS = {torch.ops.aten.to.dtype_layout, torch.ops.aten.to.dtype, torch.ops.aten.to.device}


class _Forward(torch.nn.Module):
    def __init__(self, model, training):
        super().__init__()
        self.model = model
        self.training_flag = training

    def forward(self, x):
        return self.model(x, training=self.training_flag)


def capturable(model):
    """Seeded random layers draw their seed as a Python int: a capture would freeze it."""
    return not any(keras_internals.has_fixed_seed(layer) for layer in keras_internals.all_layers(model))


class ForwardGraphs:
    """Captured forward graphs of one model, by kind of batch; `graphs(x, training)` runs one."""

    def __init__(self, model, compiled=False):
        self.model = model
        self.compiled = compiled
        self.graphs = {}
        # The state tensors (batch-norm statistics), kept once: walking the layers for them every
        # step would cost more Python than the small models' arithmetic.
        self.state = [variable.value for variable in model.non_trainable_variables]

    def __call__(self, x, training):
        # A batch of one cannot share the symbolic batch size (export specialises sizes 0 and 1); a
        # compiled graph is captured, and compiled, per batch size (Inductor fails on some of the
        # symbolic shapes export leaves: "cannot determine truth value of Relational").
        size = x.shape[0] if self.compiled else x.shape[0] == 1
        key = (training, x.dtype, x.device, tuple(x.shape[1:]), size, keras.config.dtype_policy().name)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = self._capture(x, training)
        return graph(x)

    def _capture(self, x, training):
        saved = [tensor.detach().clone() for tensor in self.state]
        devices = [x.device] if x.device.type != "cpu" else []
        dynamic = {"x": {0: torch.export.Dim.AUTO}} if x.shape[0] > 1 and not self.compiled else None
        with warnings.catch_warnings(), torch.random.fork_rng(devices, device_type=x.device.type):
            warnings.simplefilter("ignore")  # export's notes on Keras's Python (fallbacks it handles)
            exported = torch.export.export(_Forward(self.model, training), (x,), dynamic_shapes=dynamic,
                                           strict=False)
        with torch.no_grad():
            for tensor, value in zip(self.state, saved):
                tensor.copy_(value)
        module = replay_module(exported, self.model, training)
        if self.compiled:
            module = torch.compile(module, dynamic=False)
        return module


def replay_module(exported, model, training):
    """A `torch.fx.GraphModule` of `exported`'s graph whose only input is the batch and whose
    output is the model's one output, the lifted variables bound to `model`'s live variables,
    without export's assertions and no-op `.to()`."""
    if not exported.call_spec.out_spec.is_leaf():
        raise ValueError(f"{model.name}: graph capture replays models with one output tensor; use `jit: off`.")
    graph = torch.fx.Graph()
    old_graph = exported.graph_module.graph
    live = {variable.value.data_ptr(): variable.value for variable in model.variables}
    signature = exported.graph_signature
    bound = {}  # placeholder name -> the tensor it reads
    lifted = {**exported.state_dict, **exported.constants}
    user_inputs = set(signature.user_inputs)
    for spec in signature.input_specs:
        if spec.arg.name in user_inputs:
            continue
        tensor = lifted[spec.target]
        # Export lifts each variable that Keras reads as a detached alias of it: read the variable
        # itself, so that autograd sees it (a real constant, such as a scale, stays as it is).
        variable = live.get(tensor.data_ptr()) if tensor.numel() else None
        if variable is not None and (variable.shape, variable.stride()) != (tensor.shape, tensor.stride()):
            raise RuntimeError(f"{model.name}: graph capture read a view of a variable ({tuple(tensor.shape)} of "
                               f"{tuple(variable.shape)}), which it cannot bind; use `jit: off`.")
        bound[spec.arg.name] = tensor if variable is None else variable
    if training:  # a trainable variable left unbound would silently get no gradient
        reads = {id(tensor) for tensor in bound.values()}
        unbound = [variable.path for variable in model.trainable_variables if id(variable.value) not in reads]
        if unbound:
            raise RuntimeError(f"{model.name}: graph capture cannot bind {', '.join(unbound)}; use `jit: off`.")
    root = torch.nn.Module()
    values = {}
    for node in old_graph.nodes:
        if node.op == "placeholder":
            if node.name in bound:
                attribute = f"bound_{node.name}"
                tensor = bound[node.name]
                if isinstance(tensor, torch.nn.Parameter):
                    root.register_parameter(attribute, tensor)
                else:
                    root.register_buffer(attribute, tensor)
                values[node] = graph.get_attr(attribute)
            else:
                values[node] = graph.placeholder(node.name)
                values[node].meta = dict(node.meta)
        elif node.op == "output":
            (output,) = node.args[0]
            graph.output(values[output])
        elif node.op == "call_function" and node.target in _ASSERTIONS:
            continue
        elif node.op == "call_function" and node.target in _CONVERSIONS and _changes_nothing(node):
            values[node] = values[node.args[0]]
        elif node.op == "call_function" and node.target is torch.ops.aten.lift_fresh_copy.default:
            values[node] = values[node.args[0]]  # a constant, only read: no copy needed
        else:
            values[node] = graph.node_copy(node, values.get)
    graph.eliminate_dead_code()
    return torch.fx.GraphModule(root, graph, class_name="CapturedForward")


def _changes_nothing(node):
    """Whether a `.to()` node returns its input itself (same dtype, device and layout, no copy)."""
    source, result = node.args[0], node
    if not (isinstance(source, torch.fx.Node) and "val" in source.meta and "val" in result.meta):
        return False
    if node.kwargs.get("copy") or node.kwargs.get("memory_format") not in (None, torch.preserve_format):
        return False
    before, after = source.meta["val"], result.meta["val"]
    return (isinstance(before, torch.Tensor) and before.dtype == after.dtype and before.device == after.device
            and before.layout == after.layout)
