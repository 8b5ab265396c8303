"""Property-based tests of whole layer stacks and of checkpoints.

- Random small ``Sequential`` stacks (conv, pooling, activations, BatchNorm, Linear) are
  gradient-checked in float64 with ``fastcnn.gradcheck``: every element of the input and of
  every parameter against central differences.
- Random models' state dicts, with special values (NaN, +-Inf, -0.0, subnormals), and random
  nested structures go through ``fastcnn.save``/``fastcnn.load`` in both formats and come
  back bit for bit.

Derandomised and bounded (see test_property_kernels.py); ``--hypothesis-show-statistics``
prints the number of examples.
"""

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcnn
from fastcnn import functional as F
from fastcnn import nn

PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)

ACTIVATIONS = [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.SiLU]


@st.composite
def spatial_layer(draw, channels, hw):
    """One layer that keeps the input 4-D and fits its (H, W); with the new (C, H, W)."""
    kind = draw(st.sampled_from(["conv", "maxpool", "avgpool", "act", "batchnorm"]))
    if kind == "conv":
        k = draw(st.integers(1, 3))
        kernel = tuple(draw(st.integers(1, min(3, size + 2))) for size in hw)
        stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 1))
        out = tuple(F.output_size(hw[a], kernel[a], stride, padding) for a in (0, 1))
        if min(out) < 1 or kernel[0] > hw[0] + 2 * padding or kernel[1] > hw[1] + 2 * padding:
            return None
        layer = nn.Conv2d(
            channels,
            k,
            kernel,
            stride,
            padding,
            bias=draw(st.booleans()),
            rng=draw(st.integers(0, 99)),
            dtype=np.float64,
        )
        return layer, (k, *out)
    if kind in ("maxpool", "avgpool"):
        kernel = draw(st.integers(1, 3))
        padding = draw(st.integers(0, kernel // 2))
        stride = draw(st.integers(1, 2))
        if kernel > min(hw) + 2 * padding:
            return None
        out = tuple(F.output_size(size, kernel, stride, padding) for size in hw)
        if kind == "maxpool":
            return nn.MaxPool2d(kernel, stride, padding), (channels, *out)
        include = draw(st.booleans())
        return nn.AvgPool2d(kernel, stride, padding, count_include_pad=include), (channels, *out)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels, dtype=np.float64), (channels, *hw)
    return draw(st.sampled_from(ACTIVATIONS))(), (channels, *hw)


@st.composite
def layer_stack(draw):
    """(model, input): 1-4 spatial layers, then maybe Flatten + Linear (+ activation)."""
    n = draw(st.integers(2, 3))  # BatchNorm in training mode needs more than one value
    in_shape = (draw(st.integers(1, 2)), draw(st.integers(3, 7)), draw(st.integers(3, 7)))
    shape, layers = in_shape, []
    for _ in range(draw(st.integers(1, 4))):
        drawn = draw(spatial_layer(shape[0], shape[1:]))
        if drawn is not None:
            layer, shape = drawn
            layers.append(layer)
    if draw(st.booleans()):
        layers += [
            nn.Flatten(),
            nn.Linear(
                math.prod(shape),
                draw(st.integers(1, 4)),
                rng=draw(st.integers(0, 99)),
                dtype=np.float64,
            ),
        ]
        if draw(st.booleans()):
            layers.append(draw(st.sampled_from(ACTIVATIONS))())
    x = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal((n, *in_shape))
    return nn.Sequential(*layers), x


@PROPERTY
@given(stack=layer_stack())
def test_random_layer_stacks_pass_gradcheck(stack):
    model, x = stack
    assert fastcnn.gradcheck(model, (x,))


# ------------------------------------------------------------------------- checkpoints

SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 5e-324, 1e-45, np.finfo(np.float32).max]


@st.composite
def model_with_odd_values(draw):
    """A small stack (maybe with BatchNorm buffers) whose parameters hold special values."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    channels = draw(st.integers(1, 3))
    layers = [
        nn.Conv2d(
            1, channels, draw(st.integers(1, 3)), bias=draw(st.booleans()), dtype=dtype, rng=0
        )
    ]
    if draw(st.booleans()):
        layers.append(nn.BatchNorm2d(channels, affine=draw(st.booleans()), dtype=dtype))
    layers += [nn.Flatten(), nn.Linear(channels, draw(st.integers(1, 3)), dtype=dtype, rng=0)]
    model = nn.Sequential(*layers)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    for value in model.state_dict().values():
        if value.dtype.kind == "f":
            value[...] = rng.standard_normal(value.shape)
            flat = value.reshape(-1)
            flat[rng.integers(0, flat.size)] = draw(st.sampled_from(SPECIAL))
    return model


def bits(array):
    """The array's raw bytes: NaN payloads and -0.0 included."""
    return np.ascontiguousarray(array).view(np.uint8).tobytes(), array.dtype, array.shape


@pytest.fixture(scope="module")
def scratch():
    # hypothesis re-runs the test body without re-running function-scoped fixtures
    with tempfile.TemporaryDirectory(prefix="fastcnn-property-") as directory:
        yield Path(directory)


@PROPERTY
@given(model=model_with_odd_values(), suffix=st.sampled_from([".npz", ".safetensors"]))
def test_state_dict_round_trips_bit_for_bit(model, suffix, scratch):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    path = scratch / f"model{suffix}"
    saved = {key: value.copy() for key, value in model.state_dict().items()}
    fastcnn.save(model.state_dict(), path)
    for value in model.state_dict().values():
        value[...] = 0
    loaded = fastcnn.load(path)
    assert list(loaded) == list(saved)
    model.load_state_dict(loaded)
    for key, value in model.state_dict().items():
        assert bits(value) == bits(saved[key]), key


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=8),
    st.floats(allow_nan=True, allow_infinity=True),
)


def _small_int_array(dtype, shape, seed):
    return np.random.default_rng(seed).integers(-100, 100, shape).astype(dtype)


ARRAYS = st.builds(
    _small_int_array,
    st.sampled_from(["float32", "float64", "int64", "int8", "uint8", "bool", "float16"]),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.integers(0, 99),
)
KEYS = st.one_of(st.text(max_size=6), st.integers(-5, 5))
NESTED = st.recursive(
    st.one_of(SCALARS, ARRAYS),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(KEYS, children, max_size=3),
    ),
    max_leaves=10,
)


def assert_same(loaded, original, where="top"):
    """Equal structure, types and values (NaN == NaN, -0.0 != 0.0, arrays bit for bit)."""
    assert type(loaded) is type(original), where
    if isinstance(original, dict):
        assert list(loaded) == list(original), where
        assert [type(k) for k in loaded] == [type(k) for k in original], where
        for key in original:
            assert_same(loaded[key], original[key], f"{where}/{key!r}")
    elif isinstance(original, (list, tuple)):
        assert len(loaded) == len(original), where
        for index, (a, b) in enumerate(zip(loaded, original, strict=True)):
            assert_same(a, b, f"{where}/{index}")
    elif isinstance(original, np.ndarray):
        assert bits(loaded) == bits(original), where
    elif isinstance(original, float):
        same = math.isnan(loaded) if math.isnan(original) else loaded.hex() == original.hex()
        assert same, where
    else:
        assert loaded == original, where


@PROPERTY
@given(
    obj=st.dictionaries(KEYS, NESTED, max_size=4), suffix=st.sampled_from([".npz", ".safetensors"])
)
def test_nested_structures_round_trip(obj, suffix, scratch):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    path = scratch / f"nested{suffix}"
    fastcnn.save(obj, path)
    assert_same(fastcnn.load(path), obj)
