"""RandomAffine's nearest-pixel kernel (csrc/_augment.pyx) against its NumPy twin
fastcnn._reference.affine_nearest, bit for bit: random and recipe batches, positions exactly
half-way between pixels (where rounding half to even and an FMA would show), several
channels, fill != 0, one image, rows wider than the kernel's column chunk, NaN and inf
pixels, any thread count, inputs that are not contiguous float32, empty batches.

The transform's values against torchvision's definition are in test_data_augment.py.
"""

import math

import numpy as np
import pytest

import fastcnn
from fastcnn import _reference as ref
from fastcnn.data import RandomAffine

RNG_SEED = 0


def images(shape, seed=RNG_SEED):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def params_of(angle, scale=1.0, translate=(0.0, 0.0), n=1):
    """Parameters for n images, all with the same angle, scale and (x, y) translation."""
    return {
        "angle": np.full(n, angle, dtype=np.float64),
        "translate_x": np.full(n, translate[0], dtype=np.float64),
        "translate_y": np.full(n, translate[1], dtype=np.float64),
        "scale": np.full(n, scale, dtype=np.float64),
    }


def reference(affine, batch, params):
    """The twin, given the coefficients as the transform computes them."""
    radians = np.deg2rad(params["angle"])
    cos, sin = np.cos(radians) / params["scale"], np.sin(radians) / params["scale"]
    return ref.affine_nearest(
        batch, cos, sin, params["translate_x"], params["translate_y"], affine.fill
    )


def assert_same_bits(got, expected):
    assert got.dtype == expected.dtype == np.float32 and got.shape == expected.shape
    assert got.flags.c_contiguous
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def half_way_positions(affine, shape, params):
    """How many source coordinates are exactly k + 0.5 (the rounding's ties)."""
    rows, columns = affine._source_positions(shape, params)
    return sum(int(np.sum(p - np.floor(p) == 0.5)) for p in (rows, columns))


# Each case: (RandomAffine's arguments, batch shape, seed of the draw). The draws cover
# the MNIST recipe, large angles, zooms and shifts (many pixels outside) and several
# channels; W = 70 is more than one column chunk (64).
DRAWN = [
    ({"degrees": 10, "translate": (0.1, 0.1)}, (16, 1, 28, 28), 1),
    ({"degrees": 180, "translate": (0.5, 0.4), "scale": (0.3, 3.0), "fill": 0.25}, (5, 3, 7, 8), 2),
    ({"degrees": (-30, 60), "scale": (0.9, 1.2), "fill": -1.5}, (1, 2, 9, 70), 3),
    ({"degrees": 45}, (3, 1, 1, 1), 4),
]


@pytest.mark.parametrize("arguments, shape, seed", DRAWN, ids=lambda v: str(v))
def test_drawn_batches_match_the_twin_bit_for_bit(arguments, shape, seed):
    affine = RandomAffine(**arguments)
    batch = images(shape, seed)
    params = affine.draw(np.random.default_rng(seed), batch.shape)
    assert_same_bits(affine.apply(batch, params), reference(affine, batch, params))


# Positions exactly half-way between pixels, which round to the even one: a zoom by 2
# about an odd size's whole-pixel centre (offsets of whole pixels times 0.5), a zoom by 0.5
# about an even size's half-way centre (offsets of half pixels times 2), quarter turns
# (sin(pi/2) is 1 and cos 6e-17, lost in the sum) mixing an even and an odd size, and
# 45 degrees at scale sqrt(2) (cos / scale rounds near 0.5).
TIES = [
    (0.0, 2.0, (1, -1), (2, 1, 5, 7)),
    (0.0, 0.5, (0, 0), (2, 2, 6, 6)),
    (90.0, 1.0, (0, 0), (2, 2, 6, 5)),
    (90.0, 0.5, (1, 0), (2, 1, 6, 6)),
    (-90.0, 0.5, (0, 2), (1, 3, 7, 4)),
    (45.0, math.sqrt(2), (0, 0), (2, 1, 8, 8)),
]


@pytest.mark.parametrize("angle, scale, translate, shape", TIES, ids=str)
def test_half_way_positions_round_as_numpy_does(angle, scale, translate, shape):
    affine = RandomAffine(0, fill=0.5)
    batch = images(shape)
    params = params_of(angle, scale, translate, n=shape[0])
    assert half_way_positions(affine, shape, params) > 0  # else the case tests no tie
    assert_same_bits(affine.apply(batch, params), reference(affine, batch, params))


@pytest.mark.parametrize("angle, scale", [(45.0, 1.0), (135.0, 1.5)])
def test_products_are_rounded_before_the_sums(angle, scale):
    """At 45 degrees some positions are within a rounding of half-way: there, a fused
    multiply-add (one rounding instead of two) picks the other pixel. A build of the kernel
    with -mfma -ffp-contract=fast failed this test (2 pixels of each batch)."""
    affine = RandomAffine(0)
    batch = images((2, 1, 8, 8))
    params = params_of(angle, scale, n=2)
    assert_same_bits(affine.apply(batch, params), reference(affine, batch, params))


def test_nan_and_inf_pixels_are_copied_as_values():
    batch = images((2, 2, 5, 6))
    batch[0, 0, 1, 2], batch[0, 1, 3, 3], batch[1, 0, 0, 0] = np.nan, np.inf, -np.inf
    batch[1, 1, 2, 4] = -0.0
    affine = RandomAffine(0, fill=7.0)
    identity = params_of(0.0, n=2)
    assert_same_bits(affine.apply(batch, identity), batch)
    for params in (params_of(0.0, translate=(1, 1), n=2), params_of(90.0, n=2)):
        assert_same_bits(affine.apply(batch, params), reference(affine, batch, params))


def test_an_image_with_nan_parameters_is_all_fill():
    affine = RandomAffine(0, fill=0.5)
    batch = images((2, 1, 4, 4))
    params = params_of(10.0, n=2)
    params["angle"][1] = np.nan
    got = affine.apply(batch, params)
    assert_same_bits(got, reference(affine, batch, params))
    assert np.all(got[1] == 0.5) and not np.all(got[0] == 0.5)


def test_any_thread_count_gives_the_same_bits():
    affine = RandomAffine(170, translate=(0.3, 0.3), scale=(0.5, 1.5), fill=0.1)
    batch = images((7, 2, 11, 9))  # 77 rows of work: uneven over 2 or 3 threads
    params = affine.draw(np.random.default_rng(5), batch.shape)
    results = []
    for n in (1, 2, 3):
        with fastcnn.threads(n):
            results.append(affine.apply(batch, params))
    for got in results[1:]:
        assert_same_bits(got, results[0])
    assert_same_bits(results[0], reference(affine, batch, params))


def test_batches_that_are_not_contiguous_float32_give_the_same_result():
    affine = RandomAffine(25, translate=(0.2, 0.2))
    wide = images((3, 2, 6, 14))
    params = affine.draw(np.random.default_rng(6), (3, 2, 6, 7))
    expected = reference(affine, np.ascontiguousarray(wide[..., ::2]), params)
    assert_same_bits(affine.apply(wide[..., ::2], params), expected)  # a strided view
    assert_same_bits(affine.apply(wide[..., ::2].astype(np.float64), params), expected)
    # the transform itself: one (C, H, W) image, a uint8 batch
    image = np.random.default_rng(7).integers(0, 256, (1, 6, 6), dtype=np.uint8)
    out = affine(image, 8)
    params = affine.draw(np.random.default_rng(8), (1, 1, 6, 6))
    assert_same_bits(out, reference(affine, image[None].astype(np.float32), params)[0])


@pytest.mark.parametrize("shape", [(0, 1, 28, 28), (2, 1, 0, 5), (2, 0, 3, 3)], ids=str)
def test_empty_batches(shape):
    affine = RandomAffine(10)
    out = affine(np.zeros(shape, np.float32), 0)
    assert out.shape == shape and out.dtype == np.float32
