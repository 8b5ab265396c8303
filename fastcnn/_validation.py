"""Argument checks for all of fastcnn: one home for each idea and each message.

Every public entry point (functional, nn, optim, data, train, the CLI) checks its arguments
with these, once, where the user's value comes in: layers check their hyperparameters in
``__init__`` and each input once per call; the kernels behind them never check.

One policy per idea:
- an int is a Python or NumPy integer, never a bool (``is_int``);
- a float array is float32 or float64, never cast silently (``float_array``,
  ``float_input``);
- a wrong type is a TypeError, a wrong value (range, shape, size) a ValueError;
- a gradient given to a layer's backward has the last output's shape and is cast to the
  layer's dtype (``grad_like``); functional's ``*_backward`` refuse mixed dtypes;
- each message names the caller, the argument and the value, and says what to pass.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

T = TypeVar("T")

# The kernels hand per-image sizes to BLAS as 32-bit ints.
MAX_INT32 = 2**31 - 1


def is_int(value: object) -> bool:
    """True for Python/NumPy integers, False for bools (PyTorch refuses ``True`` as a size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(value: Any, name: str, owner: str) -> int:
    """``value`` as an int, refusing non-integers (TypeError) and values < 1 (ValueError)."""
    if not is_int(value):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{owner}: {name} must be positive, got {value}")
    return int(value)


def float_dtype(dtype: DTypeLike, owner: str) -> np.dtype[Any]:
    """``dtype`` as a NumPy dtype, refusing anything but float32 and float64."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{owner}: dtype must be np.float32 or np.float64, got {dtype!r}") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: dtype must be np.float32 or np.float64, got {dtype}")
    return dtype


def generator(rng: np.random.Generator | int | None, owner: str) -> np.random.Generator:
    """A ``np.random.Generator`` from ``rng``: a Generator, an int seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or is_int(rng):
        return np.random.default_rng(rng)
    raise TypeError(
        f"{owner}: rng must be a np.random.Generator, an int seed or None, got {type(rng).__name__}"
    )


def float_input(x: ArrayLike, owner: str, dtype: DTypeLike | None = None) -> NDArray[Any]:
    """``x`` as a float32/float64 ndarray; with ``dtype``, it must be exactly that dtype.

    A layer never casts its input: a silent float64 -> float32 cast would hide a slow or
    lossy pipeline, so the message says which side to convert.
    """
    x = np.asarray(x)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{owner}: input has dtype {x.dtype}; fastcnn computes in float32 or float64 only: "
            "convert it with .astype(np.float32)"
        )
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{owner}: input is {x.dtype} but the layer's parameters are {dtype}: pass "
            f"x.astype(np.{dtype}) or convert the layer with .to(np.{x.dtype})"
        )
    return x


def input_ndim(x: NDArray[Any], owner: str, allowed: tuple[int, ...]) -> None:
    """Refuse an input whose number of dimensions is not in ``allowed``."""
    if x.ndim not in allowed:
        wanted = " or ".join(f"{n}-D" for n in allowed)
        hint = " (for one image, pass x[None])" if allowed == (4,) and x.ndim == 3 else ""
        raise ValueError(f"{owner}: expected {wanted} input, got shape {x.shape}{hint}")


def input_size(x: NDArray[Any], axis: int, expected: int, owner: str, what: str) -> None:
    """Refuse an input whose size along ``axis`` is not ``expected`` (a channel count, say)."""
    if x.shape[axis] != expected:
        raise ValueError(f"{owner} expected input with {expected} {what}, got shape {x.shape}")


def grad_like(
    grad_output: ArrayLike, shape: Sequence[int], dtype: DTypeLike | None, owner: str
) -> NDArray:
    """The gradient given to a layer's ``backward``, as a C-contiguous ndarray.

    The policy of every layer (``owner`` names it in the message):

    - its shape must equal ``shape``, that of the last forward's output: any other is a
      ValueError, never broadcast (a (2,) gradient must not reach every row of (2, 2));
    - its dtype is cast to ``dtype``, the layer's (None: the gradient keeps its own), as
      PyTorch's autograd casts a gradient to the dtype of the output it belongs to.

    functional's ``*_backward`` functions are stricter, as torch.nn.functional's are: they
    refuse a gradient whose dtype differs from their other arrays (TypeError).
    """
    grad = np.asarray(grad_output, dtype=dtype, order="C")
    if grad.shape != tuple(shape):
        raise ValueError(
            f"{owner}.backward: grad_output has shape {grad.shape}, expected {tuple(shape)} "
            "(the shape of the last forward's output)"
        )
    return grad


def pass_through_dtype(output: object) -> np.dtype | None:
    """The dtype ``grad_like`` casts to for a layer that only passes its input on (Flatten,
    Identity): the output's, if it is a float array; else None (an integer array has no
    gradient of its own dtype: the gradient keeps its own)."""
    if isinstance(output, np.ndarray) and output.dtype.kind == "f":
        return output.dtype
    return None


# ------------------------------------------------------------- arrays for functional


def int_pair(value: int | Sequence[int], name: str, func: str) -> tuple[int, int]:
    """An int or an (h, w) pair of ints, as PyTorch accepts for kernel_size/stride/padding."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items
    ):
        raise TypeError(f"{func}: {name} must be an int or a pair of ints, got {value!r}")
    return int(items[0]), int(items[1])


def positive_pair(value: int | Sequence[int], name: str, func: str) -> tuple[int, int]:
    pair = int_pair(value, name, func)
    if min(pair) <= 0:
        raise ValueError(f"{func}: {name} must be positive, got {value!r}")
    return pair


def conv_groups(groups: Any, in_channels: int, out_channels: int, func: str) -> int:
    """A convolution's ``groups``: a positive int dividing both channel counts (PyTorch's
    rule and words)."""
    groups = positive_int(groups, "groups", func)
    for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
        if channels % groups:
            raise ValueError(
                f"{func}: {name} must be divisible by groups, got {name}={channels} and "
                f"groups={groups}; use a groups that divides both channel counts"
            )
    return groups


def non_negative_pair(value: int | Sequence[int], name: str, func: str) -> tuple[int, int]:
    pair = int_pair(value, name, func)
    if min(pair) < 0:
        raise ValueError(f"{func}: {name} must be >= 0, got {value!r}")
    return pair


def flag(value: object, name: str, func: str) -> bool:
    """A bool argument: True/False only (a string such as "no" would be truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be True or False, got {value!r}")
    return bool(value)


def float_array(
    array: ArrayLike, name: str, func: str, ndim: int | None = None, dtype: DTypeLike | None = None
) -> NDArray:
    """``array`` as a C-contiguous float32/float64 ndarray of ``ndim`` dimensions (None: any).

    ``dtype``, when given, is the dtype of the call's first array; a different one is refused.
    """
    if array is None:
        raise TypeError(f"{func}: {name} must be an array, got None")
    array = np.asarray(array)
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{func}: {name} has dtype {array.dtype}; fastcnn computes in float32 or float64 "
            f"only: convert it with .astype(np.float32)"
        )
    if dtype is not None and array.dtype != dtype:
        raise TypeError(
            f"{func}: {name} is {array.dtype} but the input is {dtype}; all arrays of one call "
            f"must share a dtype: use {name}.astype(np.{dtype})"
        )
    if ndim is not None and array.ndim != ndim:
        hint = " (for one image, pass x[None])" if ndim == 4 and array.ndim == 3 else ""
        raise ValueError(f"{func}: {name} must be {ndim}-D, got shape {array.shape}{hint}")
    return np.asarray(array, order="C")  # not ascontiguousarray: it makes a 0-D array 1-D


def non_empty_planes(x: NDArray, func: str, name: str = "input") -> None:
    """Refuse an (N, C, H, W) batch with no channel, row or column (N = 0 is fine)."""
    if min(x.shape[1:]) < 1:
        raise ValueError(
            f"{func}: {name} of shape {x.shape} has an empty channel or spatial dimension"
        )


def image_batch(x: ArrayLike, func: str, name: str = "input") -> NDArray:
    """``x`` as a C-contiguous float (N, C, H, W) batch with C, H, W >= 1."""
    x = float_array(x, name, func, 4)
    non_empty_planes(x, func, name)
    return x


def check_shape(
    actual: Sequence[int], expected: Sequence[int], name: str, func: str, why: str
) -> None:
    if tuple(actual) != tuple(expected):
        raise ValueError(f"{func}: {name} has shape {tuple(actual)}, expected {expected} {why}")


def fits_int32(func: str, **sizes: int) -> None:
    for name, size in sizes.items():
        if size > MAX_INT32:
            raise ValueError(f"{func}: {name} = {size} is too large for one image (max 2**31-1)")


def nchw_shape(input_shape: Sequence[int], func: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise TypeError(
            f"{func}: input_shape must be a tuple of 4 ints (N, C, H, W), got {input_shape!r}"
        ) from None
    if len(shape) != 4 or min(shape) < 0 or min(shape[1:]) < 1:
        raise ValueError(
            f"{func}: input_shape must be (N, C, H, W) with N >= 0 and C, H, W >= 1, "
            f"got {input_shape!r}"
        )
    return shape


# ------------------------------------------------ windows of convolutions and pools


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling window along one axis (no dilation)::

    out = floor((size + 2 * padding - kernel) / stride) + 1
    """
    return (size + 2 * padding - kernel) // stride + 1


def window_output_hw(
    func: str,
    in_hw: Sequence[int],
    kernel: Sequence[int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    names: tuple[str, str] = ("kernel", "input"),
) -> tuple[int, int]:
    """(OH, OW) of a window sliding over ``in_hw``, refusing a window that does not fit in
    the padded input (then every output would be at least 1). names: what the message calls
    the window and its input (the fused op's pool: "pool kernel", "convolution output")."""
    padded = (in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1])
    if kernel[0] > padded[0] or kernel[1] > padded[1]:
        window, source = names
        raise ValueError(
            f"{func}: {window} size {kernel} is larger than the padded {source} "
            f"{padded} ({source} {tuple(in_hw)} + padding {padding} on each side); "
            f"use a smaller {window} or more padding"
        )
    return (
        output_size(in_hw[0], kernel[0], stride[0], padding[0]),
        output_size(in_hw[1], kernel[1], stride[1], padding[1]),
    )


def pool_window(
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None,
    padding: int | Sequence[int],
    func: str,
    prefix: str = "",
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """A pool's kernel, stride (default: the kernel) and padding as (h, w) pairs.

    Padding is at most half the kernel, as in PyTorch: a window could otherwise hold only
    padding. prefix: of the argument names in messages ("pool_" for the fused op's pool).
    """
    kernel = positive_pair(kernel_size, f"{prefix}kernel_size", func)
    steps = kernel if stride is None else positive_pair(stride, f"{prefix}stride", func)
    pads = non_negative_pair(padding, f"{prefix}padding", func)
    if pads[0] > kernel[0] // 2 or pads[1] > kernel[1] // 2:
        window = "pool kernel" if prefix else "kernel"
        raise ValueError(
            f"{func}: {prefix}padding {pads} must be at most half the {window} size "
            f"{kernel} (otherwise a window could hold only padding)"
        )
    return kernel, steps, pads


def image_input(input: ArrayLike, owner: str, dtype: DTypeLike, channels: int) -> NDArray[Any]:
    """A layer's (N, C, H, W) input: of the layer's ``dtype`` (never cast), 4-D, with
    ``channels`` channels; C-contiguous, as the kernels read it (a copy of a transposed
    NHWC batch, say)."""
    x = float_input(input, owner, dtype)
    input_ndim(x, owner, (4,))
    input_size(x, 1, channels, owner, "channels (dim 1)")
    return np.ascontiguousarray(x)


# ------------------------------------------- scalar arguments of optim, train, data, CLI


def integer(
    value: Any, name: str, owner: str, minimum: int | None = None, *, expected: str = "an int"
) -> int:
    """``value`` as an int: a Python or NumPy integer, never a bool (TypeError), and at
    least ``minimum`` when given (ValueError).

    ``expected`` says what the caller accepts in the TypeError's message, e.g. "an int or
    None" for an argument where None has a meaning the caller handles first.
    """
    if not is_int(value):
        raise TypeError(f"{owner}: {name} must be {expected}, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return int(value)


def is_real(value: object) -> bool:
    """True for Python/NumPy ints and floats (NaN included), False for bools, strings,
    None and arrays."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number(value: Any, name: str, owner: str) -> Any:
    """``value`` unchanged if it is a real number (NaN included: the caller checks the
    range, with its own message), else a TypeError."""
    if not is_real(value):
        raise TypeError(
            f"{owner}: {name} must be a real number, got {type(value).__name__} {value!r}"
        )
    return value


def real(
    value: Any,
    name: str,
    owner: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> float:
    """``value`` as a float: a real number, never a bool (TypeError), never NaN, and within
    [low, high] (``low_open``: (low, high]) where those bounds are given (ValueError)."""
    value = float(number(value, name, owner))
    too_low = low is not None and (value <= low if low_open else value < low)
    if value != value or too_low or (high is not None and value > high):
        bounds = ""
        if low is not None or high is not None:
            left = "(" if low_open else "["
            low_text = "-inf" if low is None else low
            bounds = f" in {left}{low_text}, {'inf' if high is None else high}]"
        raise ValueError(f"{owner}: {name} must be a number{bounds}, got {value}")
    return value


def instance_of(value: T, name: str, owner: str, cls: type | tuple[type, ...], expected: str) -> T:
    """``value`` if it is a ``cls`` (described by ``expected``, e.g. "a fastcnn.nn.Module"),
    else a TypeError naming the type it has."""
    if not isinstance(value, cls):
        raise TypeError(f"{owner}: {name} must be {expected}, got {type(value).__name__}")
    return value
