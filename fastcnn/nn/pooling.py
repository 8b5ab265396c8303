"""MaxPool2d and AvgPool2d: the layers over ``fastcnn.functional``'s pooling."""

from fastcnn import functional as F
from fastcnn._validation import (
    flag,
    float_input,
    grad_like,
    input_ndim,
    non_negative_pair,
    positive_pair,
)
from fastcnn.nn.module import Module

__all__ = ["AvgPool2d", "MaxPool2d"]


class _Pool2d(Module):
    """Shared hyperparameter checks and repr of the 2-D pools."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = positive_pair(kernel_size, "kernel_size", name)
        self.stride = self.kernel_size if stride is None else positive_pair(stride, "stride", name)
        self.padding = non_negative_pair(padding, "padding", name)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(
                f"{name}: padding {self.padding} must be at most half the kernel size "
                f"{self.kernel_size} (pad should be at most half of effective kernel size)"
            )
        # Reported as given (an int stays an int), as PyTorch's repr does.
        self._given = (kernel_size, kernel_size if stride is None else stride, padding)

    def _input(self, input):
        x = float_input(input, type(self).__name__)
        input_ndim(x, type(self).__name__, (4,))
        return x

    def extra_repr(self):
        kernel_size, stride, padding = self._given
        return f"kernel_size={kernel_size}, stride={stride}, padding={padding}"


class MaxPool2d(_Pool2d):
    """2-D max pooling (PyTorch's CPU rules: ties go to the first maximum in row-major order,
    a NaN wins, padding is never chosen).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default: kernel_size
    padding : int or (int, int), default 0
        At most half the kernel size.

    Shape
    -----
    Input (N, C, H, W), output (N, C, OH, OW) with::

        OH = floor((H + 2 * padding[0] - kernel_size[0]) / stride[0]) + 1
    """

    def forward(self, input):
        x = self._input(input)
        out, indices = F.max_pool2d(
            x, self.kernel_size, self.stride, self.padding, return_indices=True
        )
        self._save_for_backward(indices=indices, input_shape=x.shape, dtype=x.dtype)
        return out

    def backward(self, grad_output, input_grad=True):
        saved = self._saved()
        if not input_grad:
            return None
        indices = saved["indices"]
        grad = grad_like(grad_output, indices.shape, saved["dtype"], "MaxPool2d")
        return F.max_pool2d_backward(grad, indices, saved["input_shape"])


class AvgPool2d(_Pool2d):
    """2-D average pooling.

    Parameters
    ----------
    kernel_size, stride, padding
        As in ``MaxPool2d``.
    count_include_pad : bool, default True
        Count padding cells (as zeros) in the divisor, as PyTorch does by default.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = flag(count_include_pad, "count_include_pad", "AvgPool2d")

    def forward(self, input):
        x = self._input(input)
        out = F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)
        self._save_for_backward(input_shape=x.shape, output_shape=out.shape, dtype=x.dtype)
        return out

    def backward(self, grad_output, input_grad=True):
        saved = self._saved()
        if not input_grad:
            return None
        grad = grad_like(grad_output, saved["output_shape"], saved["dtype"], "AvgPool2d")
        return F.avg_pool2d_backward(
            grad,
            saved["input_shape"],
            self.kernel_size,
            self.stride,
            self.padding,
            self.count_include_pad,
        )

    def extra_repr(self):
        text = super().extra_repr()
        return text if self.count_include_pad else text + ", count_include_pad=False"
