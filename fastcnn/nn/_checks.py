"""Argument checks shared by the layers: one home for each message."""

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_int(value):
    """True for Python/NumPy integers, False for bools (PyTorch refuses ``True`` as a size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(value, name, owner):
    """``value`` as an int, refusing non-integers (TypeError) and values < 1 (ValueError)."""
    if not is_int(value):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{owner}: {name} must be positive, got {value}")
    return int(value)


def float_dtype(dtype, owner):
    """``dtype`` as a NumPy dtype, refusing anything but float32 and float64."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{owner}: dtype must be np.float32 or np.float64, got {dtype!r}") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: dtype must be np.float32 or np.float64, got {dtype}")
    return dtype


def generator(rng, owner):
    """A ``np.random.Generator`` from ``rng``: a Generator, an int seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or is_int(rng):
        return np.random.default_rng(rng)
    raise TypeError(
        f"{owner}: rng must be a np.random.Generator, an int seed or None, got {type(rng).__name__}"
    )


def float_input(x, owner, dtype=None):
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


def input_ndim(x, owner, allowed):
    """Refuse an input whose number of dimensions is not in ``allowed``."""
    if x.ndim not in allowed:
        wanted = " or ".join(f"{n}-D" for n in allowed)
        hint = " (for one image, pass x[None])" if allowed == (4,) and x.ndim == 3 else ""
        raise ValueError(f"{owner}: expected {wanted} input, got shape {x.shape}{hint}")


def input_size(x, axis, expected, owner, what):
    """Refuse an input whose size along ``axis`` is not ``expected`` (a channel count, say)."""
    if x.shape[axis] != expected:
        raise ValueError(f"{owner} expected input with {expected} {what}, got shape {x.shape}")


def grad_like(grad_output, shape, dtype, owner):
    """``grad_output`` as an ndarray of ``dtype`` (None: its own), refusing a shape other
    than ``shape`` (that of the last forward's output) rather than letting NumPy broadcast."""
    grad = np.asarray(grad_output) if dtype is None else np.asarray(grad_output, dtype=dtype)
    if grad.shape != tuple(shape):
        raise ValueError(
            f"{owner}.backward: grad_output has shape {grad.shape}, expected {tuple(shape)} "
            "(the shape of the last forward's output)"
        )
    return grad
