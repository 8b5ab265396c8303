"""Conv2d -> ReLU -> MaxPool2d inside a Sequential, run as one fused kernel.

``Sequential`` splits its modules into stages: each run of exactly ``Conv2d``, ``ReLU``,
``MaxPool2d`` becomes one ``ConvReLUMaxPool`` stage, every other module is a stage of its
own. The fused stage calls ``functional.conv2d_relu_max_pool2d``, which keeps each image's
convolution output in cache instead of writing the whole activation to memory three times
(measured on LeNet-5: see bench/README.md), with the bits of the three layers run one by
one: outputs, gradients and ``.grad`` are identical, fused or not. The three modules keep
their parameters, state-dict keys and repr; only their individual ``backward`` is
unavailable after a fused forward (the Sequential's backward is the one to call).

Subclasses are never fused: they may override forward or backward.
"""

from fastcnn import functional as F
from fastcnn._validation import grad_like
from fastcnn.nn.activation import ReLU
from fastcnn.nn.conv import Conv2d
from fastcnn.nn.pooling import MaxPool2d

FUSED_PATTERN = (Conv2d, ReLU, MaxPool2d)


class ConvReLUMaxPool:
    """One stage: a Conv2d, the ReLU and the MaxPool2d after it, forward and backward."""

    def __init__(self, conv, relu, pool):
        self.modules = (conv, relu, pool)
        self.saved = None

    def __call__(self, input):
        conv, _, pool = self.modules
        x = conv._checked_input(input)
        bias = None if conv.bias is None else conv.bias.data
        result = F.conv2d_relu_max_pool2d(
            x,
            conv.weight.data,
            bias,
            conv.stride,
            conv.padding,
            pool.kernel_size,
            pool.stride,
            pool.padding,
            save_columns=conv.training,
        )
        out, indices, columns = result if len(result) == 3 else (*result, None)
        self.saved = (x, out, indices, columns)
        for module in self.modules:
            module._save_for_backward(fused_into_sequential=True)
        return out

    def backward(self, grad_output, input_grad):
        conv = self.modules[0]
        x, out, indices, columns = self.saved
        grad_x, grad_w, grad_b = F.conv2d_relu_max_pool2d_backward(
            grad_like(grad_output, out.shape, x.dtype, "MaxPool2d"),
            out,
            indices,
            x,
            conv.weight.data,
            conv.stride,
            conv.padding,
            input_grad=input_grad,
            bias_grad=conv.bias is not None,
            columns=columns,
        )
        conv._accumulate_grads(grad_w, grad_b)
        return grad_x


def stages(modules):
    """The modules as a list of stages, each callable with a ``backward`` like a module's."""
    result, i = [], 0
    while i < len(modules):
        run = tuple(type(m) for m in modules[i : i + len(FUSED_PATTERN)])
        if run == FUSED_PATTERN:
            result.append(ConvReLUMaxPool(*modules[i : i + len(FUSED_PATTERN)]))
            i += len(FUSED_PATTERN)
        else:
            result.append(modules[i])
            i += 1
    return result
