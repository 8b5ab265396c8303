"""AdaptiveAvgPool2d and AdaptiveMaxPool2d: against the reference twins (fastcnn/_reference.py)
and torch.nn, by finite differences, at any thread count, and inside a Sequential."""

import numpy as np
import pytest
from layer_checks import assert_sequential_matches_its_layers

import fastcnn
from fastcnn import _reference as ref
from fastcnn import gradcheck, nn
from fastcnn.nn import pooling

F32, F64 = np.float32, np.float64

# (input shape, output_size): global pooling, sizes that divide the input (the pool
# kernels' path), sizes that do not (overlapping bins), None entries, larger than the input
SIZES = [
    ((2, 3, 7, 5), 1),
    ((2, 3, 7, 5), (1, 1)),
    ((2, 3, 8, 6), (4, 3)),
    ((2, 3, 8, 6), 2),
    ((2, 3, 7, 5), (3, 2)),
    ((2, 3, 7, 5), (4, 3)),
    ((2, 3, 7, 5), (None, 3)),
    ((2, 3, 7, 5), (2, None)),
    ((1, 2, 5, 4), 9),
    ((3, 7, 5), (3, 2)),  # unbatched (C, H, W), as torch accepts
    ((3, 7, 5), 1),
    ((0, 3, 7, 5), (3, 2)),  # an empty batch
]
IDS = [f"{shape}->{size}" for shape, size in SIZES]


def _resolved(shape, output_size):
    pair = output_size if isinstance(output_size, tuple) else (output_size, output_size)
    return tuple(shape[-2 + a] if pair[a] is None else pair[a] for a in (0, 1))


def _batch(array, shape):
    """The (N, C, H, W) form of an array of ``shape`` (one image if 3-D)."""
    return array[None] if len(shape) == 3 else array


def _integers(shape, seed=0, high=4):
    """Small integers: exact sums, and many ties for the max rule."""
    return np.random.default_rng(seed).integers(0, high, shape).astype(F64)


# ----------------------------------------------------------------- the reference twins


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("shape, output_size", SIZES, ids=IDS)
def test_max_matches_the_reference_bit_for_bit(shape, output_size, dtype):
    x = _integers(shape).astype(dtype)
    x.reshape(-1)[::7] = np.nan  # NaN propagates: the last NaN of a bin wins
    layer = nn.AdaptiveMaxPool2d(output_size, return_indices=True)
    out, indices = layer(x)
    ref_out, ref_index = ref.adaptive_max_pool2d(_batch(x, shape), _resolved(shape, output_size))
    np.testing.assert_array_equal(_batch(out, shape), ref_out)
    np.testing.assert_array_equal(_batch(indices, shape), ref_index)
    assert out.dtype == dtype and indices.dtype == np.int64
    grad = _integers(out.shape, seed=1).astype(dtype)
    ref_grad = ref.max_pool2d_backward(_batch(grad, shape), ref_index, _batch(x, shape).shape)
    np.testing.assert_array_equal(_batch(layer.backward(grad), shape), ref_grad)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("shape, output_size", SIZES, ids=IDS)
def test_avg_matches_the_reference(shape, output_size, dtype):
    x = _integers(shape).astype(dtype)
    layer = nn.AdaptiveAvgPool2d(output_size)
    out = layer(x)
    assert out.dtype == dtype
    tolerance = 1e-6 if dtype == F32 else 1e-14
    ref_out = ref.adaptive_avg_pool2d(_batch(x, shape), _resolved(shape, output_size))
    np.testing.assert_allclose(_batch(out, shape), ref_out, rtol=tolerance, atol=tolerance)
    grad = _integers(out.shape, seed=1).astype(dtype)
    ref_grad = ref.adaptive_avg_pool2d_backward(_batch(grad, shape), _batch(x, shape).shape)
    grad_x = layer.backward(grad)
    assert grad_x.shape == x.shape and grad_x.dtype == dtype
    np.testing.assert_allclose(_batch(grad_x, shape), ref_grad, rtol=tolerance, atol=tolerance)


def test_bins_follow_torchs_rule():
    # 7 rows into 3 bins: [floor(7i/3), ceil(7(i+1)/3)) = [0, 3), [2, 5), [4, 7)
    x = np.arange(7, dtype=F64).reshape(1, 1, 7, 1)
    np.testing.assert_array_equal(nn.AdaptiveAvgPool2d((3, 1))(x).ravel(), [1, 3, 5])
    np.testing.assert_array_equal(nn.AdaptiveMaxPool2d((3, 1))(x).ravel(), [2, 4, 6])


def test_max_takes_the_first_maximum_in_row_major_order():
    x = np.array([[[[1, 5, 5], [5, 2, 0], [0, 0, 5]]]], F32)
    out, indices = nn.AdaptiveMaxPool2d(1, return_indices=True)(x)
    assert out.item() == 5 and indices.item() == 1
    out, indices = nn.AdaptiveMaxPool2d(2, return_indices=True)(x)  # bins [0, 2), [1, 3)
    np.testing.assert_array_equal(indices[0, 0], [[1, 1], [3, 8]])


def test_global_pooling_is_one_reduction_not_a_loop_over_bins(monkeypatch):
    def no_bins(*args):
        raise AssertionError("global pooling must not loop over bins")

    monkeypatch.setattr(pooling, "_bins", no_bins)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 7)).astype(F32)
    for layer in (nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d((1, 1))):
        out = layer(x)
        assert out.shape == (2, 3, 1, 1)
        layer.backward(np.ones_like(out))
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d(1)(x)[..., 0, 0], x.mean(axis=(2, 3)))


def test_zero_output_size_gives_an_empty_output_as_torch():
    x = np.ones((2, 3, 4, 4), F32)
    for layer in (nn.AdaptiveAvgPool2d(0), nn.AdaptiveMaxPool2d((0, 2))):
        out = layer(x)
        assert out.shape[:2] == (2, 3) and out.size == 0
        np.testing.assert_array_equal(layer.backward(out), np.zeros_like(x))


# ------------------------------------------------------------------------ torch parity

torch_cases = pytest.mark.parametrize("shape, output_size", SIZES[:-1], ids=IDS[:-1])


def _torch_parity(ours, theirs, x, tolerance):
    torch = pytest.importorskip("torch")
    x_t = torch.tensor(x, requires_grad=True)
    out_t = theirs(x_t)
    indices_t = None
    if isinstance(out_t, tuple):
        out_t, indices_t = out_t
    out = ours(x)
    if indices_t is not None:
        out, indices = out
        np.testing.assert_array_equal(indices, indices_t.numpy())
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=tolerance, atol=tolerance)
    grad = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
    out_t.backward(torch.tensor(grad))
    grad_x = ours.backward(grad)
    np.testing.assert_allclose(grad_x, x_t.grad.numpy(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype, tolerance", [(F32, 1e-6), (F64, 1e-12)])
@torch_cases
def test_matches_torch(shape, output_size, dtype, tolerance):
    tnn = pytest.importorskip("torch").nn
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    _torch_parity(
        nn.AdaptiveAvgPool2d(output_size), tnn.AdaptiveAvgPool2d(output_size), x, tolerance
    )
    _torch_parity(
        nn.AdaptiveMaxPool2d(output_size, return_indices=True),
        tnn.AdaptiveMaxPool2d(output_size, return_indices=True),
        x,
        tolerance,
    )


@torch_cases
def test_max_ties_and_nan_match_torch(shape, output_size):
    tnn = pytest.importorskip("torch").nn
    x = _integers(shape, seed=3, high=3).astype(F32)
    x.reshape(-1)[::5] = np.nan
    _torch_parity(
        nn.AdaptiveMaxPool2d(output_size, return_indices=True),
        tnn.AdaptiveMaxPool2d(output_size, return_indices=True),
        x,
        0,
    )


@pytest.mark.parametrize("output_size", [1, (None, 3), [2, 3], (4, None)])
def test_repr_matches_torch(output_size):
    tnn = pytest.importorskip("torch").nn
    assert repr(nn.AdaptiveAvgPool2d(output_size)) == repr(tnn.AdaptiveAvgPool2d(output_size))
    for flag in (False, True):
        ours = nn.AdaptiveMaxPool2d(output_size, return_indices=flag)
        assert repr(ours) == repr(tnn.AdaptiveMaxPool2d(output_size, return_indices=flag))


# ---------------------------------------------------- gradients, threads, Sequential


@pytest.mark.parametrize("output_size", [1, (3, 2), (2, 3), (None, 4), 9])
@pytest.mark.parametrize("layer_type", [nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d])
def test_passes_gradcheck(layer_type, output_size):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    assert gradcheck(layer_type(output_size), x)
    assert gradcheck(layer_type(output_size), x[0])  # unbatched


@pytest.mark.parametrize("output_size", [1, (4, 3), (3, 2)])
@pytest.mark.parametrize("layer_type", [nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d])
def test_bit_identical_for_1_and_3_threads(layer_type, output_size):
    x = np.random.default_rng(0).standard_normal((5, 4, 8, 9)).astype(F32)
    results = []
    for n_threads in (1, 3):
        with fastcnn.threads(n_threads):
            layer = layer_type(output_size)
            out = layer(x)
            grad = np.random.default_rng(1).standard_normal(out.shape).astype(F32)
            results.append((out, layer.backward(grad)))
    for first, second in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("training", [True, False])
def test_in_a_sequential_forward_and_backward(training):
    def model():
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, rng=0),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d((3, 4)),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 3, rng=1),
        )

    x = np.random.default_rng(0).standard_normal((3, 2, 7, 9)).astype(F32)
    seq, layers = model().train(training), model().train(training)
    assert_sequential_matches_its_layers(seq, layers, x, None)
