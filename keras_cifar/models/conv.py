"""Convolutions computed as PyTorch's `nn.Conv2d`: the bias inside torch's kernel, and explicit
padding where Keras's `"same"` would pad differently from PyTorch (at the end, when the stride
is above 1)."""

import keras
from keras import layers, ops

from keras_cifar._backend import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchConv2D(layers.Conv2D):
    """`Conv2D` whose bias is added inside torch's convolution kernel, as `nn.Conv2d` does.

    Keras's layer adds the bias as a separate element-wise pass over the output, which costs a
    small network on a CPU several percent of its step. Where torch's kernel cannot take the
    layer as it is (a channels-last layout, strided or even-sized "same" padding, "causal"
    padding) it is Keras's layer. On another backend a channels-first layer computes in
    channels-last (`channels_last_conv2d`), the same weights giving the same outputs."""

    def _torch_padding(self):
        if keras.backend.backend() != "torch" or self.data_format != "channels_first":
            return None
        if self.padding == "valid":
            return 0
        if self.padding == "same" and all(s == 1 for s in self.strides) and all(k % 2 for k in self.kernel_size):
            return tuple((k - 1) // 2 * d for k, d in zip(self.kernel_size, self.dilation_rate))
        return None

    def call(self, inputs):
        if keras.backend.backend() != "torch" and self.data_format == "channels_first":
            outputs = channels_last_conv2d(inputs, self.kernel, self.bias if self.use_bias else None,
                                           strides=self.strides, padding=self.padding, dilation=self.dilation_rate)
            return self.activation(outputs) if self.activation is not None else outputs
        padding = self._torch_padding()
        if padding is None:
            return super().call(inputs)
        outputs = torch_conv2d(inputs, self.kernel, self.bias if self.use_bias else None, strides=self.strides,
                               padding=padding, dilation=self.dilation_rate, groups=self.groups)
        return self.activation(outputs) if self.activation is not None else outputs


def torch_conv2d(inputs, kernel, bias=None, strides=1, padding=0, dilation=1, groups=1):
    """torch's `conv2d` on channels-first `inputs` with a Keras kernel (kh, kw, in, out) and the bias
    inside the kernel (torch backend only)."""
    import torch.nn.functional as F

    kernel = ops.convert_to_tensor(kernel).permute(3, 2, 0, 1)  # -> (out, in, kh, kw)
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
    """`nn.Conv2d(..., stride, padding)` as Keras layers: a list to apply in order.

    Stride-1 convolutions with `padding == kernel_size // 2` use Keras `"same"`,
    which pads symmetrically there and lets torch pad inside the conv kernel.
    """
    conv_kwargs = dict(strides=strides, use_bias=use_bias, data_format=data_format)
    if padding == 0:
        return [TorchConv2D(filters, kernel_size, padding="valid", name=name, **conv_kwargs)]
    if strides == 1 and kernel_size % 2 == 1 and padding == kernel_size // 2:
        return [TorchConv2D(filters, kernel_size, padding="same", name=name, **conv_kwargs)]
    pad_name = f"{name}_pad" if name else None
    return [
        layers.ZeroPadding2D(padding, data_format=data_format, name=pad_name),
        TorchConv2D(filters, kernel_size, padding="valid", name=name, **conv_kwargs),
    ]
