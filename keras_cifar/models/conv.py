"""Layers computed by the torch kernels of `nn.Conv2d` and `nn.Linear`, with Keras's weights and
files: the convolution's bias inside torch's kernel, its kernel laid out as torch's, explicit
padding where Keras's `"same"` would pad differently from PyTorch (at the end, when the stride is
above 1), and the dense layer's bias inside torch's `addmm`."""

import keras
from keras import layers, ops

from keras_cifar import keras_internals
from keras_cifar._backend import PACKAGE

TORCH_KERNEL_ORDER = (3, 2, 0, 1)  # Keras's kernel axes (kh, kw, in, out) in torch's order (out, in, kh, kw)
# How a kernel lies in memory: (out, kh, kw, in), torch's channels-last kernel. Its gradient arrives
# in that layout whether the activations are channels-last (the raw NHWC images permuted) or not.
KERNEL_MEMORY_ORDER = (3, 0, 1, 2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchConv2D(layers.Conv2D):
    """`Conv2D` whose bias is added inside torch's convolution kernel, as `nn.Conv2d` does.

    Keras's layer adds the bias as a separate element-wise pass over the output, which costs a
    small network on a CPU several percent of its step. `symmetric_padding` (with `padding="valid"`)
    pads that many zeros on every side, as `nn.Conv2d(padding=p)` does, inside torch's kernel.
    Where torch's kernel cannot take the layer as it is (a channels-last layout, strided or
    even-sized "same" padding, "causal" padding) it is Keras's layer. On another backend a
    channels-first layer computes in channels-last (`channels_last_conv2d`), the same weights
    giving the same outputs."""

    def __init__(self, *args, symmetric_padding=0, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(symmetric_padding, int) or symmetric_padding < 0:
            raise ValueError(f"`symmetric_padding` must be a non-negative integer. "
                             f"Received: symmetric_padding={symmetric_padding!r}")
        if symmetric_padding and self.padding != "valid":
            raise ValueError(f"`symmetric_padding` pads by itself: use it with padding='valid'. "
                             f"Received: padding={self.padding!r}")
        self.symmetric_padding = symmetric_padding

    def _padded_shape(self, input_shape):
        axes = (2, 3) if self.data_format == "channels_first" else (1, 2)
        return tuple(size + 2 * self.symmetric_padding if axis in axes and size is not None else size
                     for axis, size in enumerate(input_shape))

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(self._padded_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        if self.symmetric_padding:
            config["symmetric_padding"] = self.symmetric_padding
        return config

    def build(self, input_shape):
        super().build(input_shape)
        if keras.backend.backend() == "torch":
            # Keras's shape (kh, kw, in, out) over torch's channels-last kernel layout: the kernel
            # torch's convolution reads is a view, and its gradient arrives in the variable's own
            # layout (in Keras's layout autograd would copy every kernel gradient, every step).
            keras_internals.lay_out(self.kernel, KERNEL_MEMORY_ORDER)

    def _torch_padding(self):
        if keras.backend.backend() != "torch" or self.data_format != "channels_first":
            return None
        if self.padding == "valid":
            return self.symmetric_padding
        if self.padding == "same" and all(s == 1 for s in self.strides) and all(k % 2 for k in self.kernel_size):
            return tuple((k - 1) // 2 * d for k, d in zip(self.kernel_size, self.dilation_rate))
        return None

    def call(self, inputs):
        padding = self._torch_padding()
        if self.symmetric_padding and padding is None:
            pad = [[self.symmetric_padding] * 2] * 2
            inputs = ops.pad(inputs, [[0, 0], [0, 0], *pad] if self.data_format == "channels_first"
                             else [[0, 0], *pad, [0, 0]])
        if keras.backend.backend() != "torch" and self.data_format == "channels_first":
            outputs = channels_last_conv2d(inputs, self.kernel, self.bias if self.use_bias else None,
                                           strides=self.strides, padding=self.padding, dilation=self.dilation_rate)
            return self.activation(outputs) if self.activation is not None else outputs
        if padding is None:
            return super().call(inputs)
        outputs = torch_conv2d(inputs, self.kernel, self.bias if self.use_bias else None, strides=self.strides,
                               padding=padding, dilation=self.dilation_rate, groups=self.groups)
        return self.activation(outputs) if self.activation is not None else outputs


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchDense(layers.Dense):
    """`Dense` whose bias is added inside torch's matrix product (`addmm`, as `nn.Linear` does):
    one kernel where Keras's layer launches a product and an addition. Other inputs (not 2-D, a
    LoRA rank, a quantized kernel) and other backends take Keras's layer."""

    def call(self, inputs, training=None):
        if (keras.backend.backend() != "torch" or not self.use_bias or len(inputs.shape) != 2 or self.lora_enabled
                or self.quantization_mode is not None):
            return super().call(inputs, training=training)
        import torch

        outputs = torch.addmm(ops.convert_to_tensor(self.bias), inputs, ops.convert_to_tensor(self.kernel))
        return self.activation(outputs) if self.activation is not None else outputs


def torch_conv2d(inputs, kernel, bias=None, strides=1, padding=0, dilation=1, groups=1):
    """torch's `conv2d` on channels-first `inputs` with a Keras kernel (kh, kw, in, out) and the bias
    inside the kernel (torch backend only)."""
    import torch.nn.functional as F

    kernel = ops.convert_to_tensor(kernel).permute(TORCH_KERNEL_ORDER)  # -> (out, in, kh, kw)
    bias = ops.convert_to_tensor(bias) if bias is not None else None
    return F.conv2d(inputs, kernel, bias, stride=strides, padding=padding, dilation=dilation, groups=groups)


def channels_last_conv2d(inputs, kernel, bias=None, strides=1, padding="valid", dilation=1):
    """A convolution of channels-first `inputs` computed in channels-last with `keras.ops`, for
    backends other than torch: TensorFlow's CPU kernels take channels-last only."""
    outputs = ops.conv(ops.transpose(inputs, (0, 2, 3, 1)), kernel, strides=strides, padding=padding,
                       dilation_rate=dilation, data_format="channels_last")
    if bias is not None:
        outputs = outputs + ops.cast(bias, outputs.dtype)
    return ops.transpose(outputs, (0, 3, 1, 2))


def torch_conv(filters, kernel_size, *, strides=1, padding=0, use_bias=True, data_format=None, name=None):
    """`nn.Conv2d(..., stride, padding)` as Keras layers: a list to apply in order (one layer).

    Stride-1 convolutions with `padding == kernel_size // 2` use Keras `"same"`, which pads
    symmetrically there; the others pad `padding` zeros on every side (`symmetric_padding`),
    inside torch's kernel as nn.Conv2d does.
    """
    conv_kwargs = dict(strides=strides, use_bias=use_bias, data_format=data_format)
    if strides == 1 and kernel_size % 2 == 1 and padding == kernel_size // 2 and padding:
        return [TorchConv2D(filters, kernel_size, padding="same", name=name, **conv_kwargs)]
    return [TorchConv2D(filters, kernel_size, padding="valid", symmetric_padding=padding, name=name, **conv_kwargs)]
