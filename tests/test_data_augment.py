"""Random augmentations (RandomCrop, RandomHorizontalFlip, RandomAffine, Compose with rng) and
the DataLoader's seeded augmentation stream and background loading."""

import math
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from fastcnn import models, nn, optim, train
from fastcnn.data import (
    ArrayDataset,
    Compose,
    DataLoader,
    Normalize,
    RandomAffine,
    RandomCrop,
    RandomHorizontalFlip,
)


def _images(n=4, channels=2, height=5, width=6, seed=0):
    return np.random.default_rng(seed).random((n, channels, height, width), dtype=np.float32)


# ---------------------------------------------------------------------------- RandomCrop


def _crop_reference(batch, crop, params, widths, mode, fill):
    """torchvision's crop of each image alone: pad it, then slice at its offsets."""
    left, top, right, bottom = widths
    out = []
    for image, i, j in zip(batch, params["top"], params["left"], strict=True):
        pad = ((0, 0), (top, bottom), (left, right))
        kwargs = {"constant_values": fill} if mode == "constant" else {}
        padded = np.pad(image, pad, mode=mode, **kwargs)
        out.append(padded[:, i : i + crop[0], j : j + crop[1]])
    return np.stack(out)


@pytest.mark.parametrize(
    "crop, widths",
    [
        (RandomCrop(4, padding=1, fill=0.5), (1, 1, 1, 1)),
        (RandomCrop((3, 5), padding=(2, 1), padding_mode="reflect"), (2, 1, 2, 1)),
        # 6 + 1 columns and 5 + 2 rows, one short of 8: one more on each end
        (RandomCrop(8, padding=[1, 0, 0, 2], pad_if_needed=True), (2, 1, 1, 3)),
        (RandomCrop([5]), (0, 0, 0, 0)),
    ],
)
def test_random_crop_matches_per_image_slicing(crop, widths):
    batch = _images()
    params = crop.draw(np.random.default_rng(1), batch.shape)
    out = crop.apply(batch, params)
    expected = _crop_reference(batch, crop.size, params, widths, crop.padding_mode, crop.fill)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32 and out.shape == (4, 2, *crop.size)
    # __call__ draws the same parameters from the same generator
    np.testing.assert_array_equal(crop(batch, np.random.default_rng(1)), out)


def test_random_crop_offsets_cover_every_position_and_one_image_works():
    crop = RandomCrop(3, padding=1)  # 5x6 padded to 7x8: 5 rows x 6 columns of offsets
    params = crop.draw(np.random.default_rng(0), (2000, 1, 5, 6))
    assert set(params["top"].tolist()) == set(range(5))
    assert set(params["left"].tolist()) == set(range(6))
    image = _images(1)[0]
    assert crop(image, 3).shape == (2, 3, 3)
    np.testing.assert_array_equal(crop(image, 3), crop(image[None], 3)[0])
    np.testing.assert_array_equal(RandomCrop((5, 6))(image, 0), image)  # full size: identity


# ------------------------------------------------------------------ RandomHorizontalFlip


def test_random_horizontal_flip_per_image():
    batch = _images(n=64)
    flip = RandomHorizontalFlip()
    params = flip.draw(np.random.default_rng(2), batch.shape)
    out = flip.apply(batch, params)
    for image, flipped, done in zip(batch, out, params["flip"], strict=True):
        np.testing.assert_array_equal(flipped, image[:, :, ::-1] if done else image)
    assert 10 < params["flip"].sum() < 54  # each image its own coin
    np.testing.assert_array_equal(RandomHorizontalFlip(0)(batch, 0), batch)
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0)(batch, 0), batch[..., ::-1])


# -------------------------------------------------------------------------- RandomAffine


def _affine_reference(image, angle, tx, ty, scale, interpolation, fill):
    """One image, pixel by pixel, from torchvision's definition: the inverse of rotation by
    ``angle`` and zoom ``scale`` about the centre ((W-1)/2, (H-1)/2), after the shift."""
    channels, height, width = image.shape
    out = np.empty_like(image)
    rad = math.radians(angle)
    cos, sin = math.cos(rad) / scale, math.sin(rad) / scale
    cx, cy = (width - 1) / 2, (height - 1) / 2
    for r in range(height):
        for c in range(width):
            x, y = c - cx - tx, r - cy - ty
            sx, sy = cos * x + sin * y + cx, -sin * x + cos * y + cy
            if interpolation == "nearest":
                corners = [(round(sy), round(sx), 1.0)]
            else:
                y0, x0 = math.floor(sy), math.floor(sx)
                dy, dx = sy - y0, sx - x0
                corners = [
                    (y0, x0, (1 - dy) * (1 - dx)),
                    (y0, x0 + 1, (1 - dy) * dx),
                    (y0 + 1, x0, dy * (1 - dx)),
                    (y0 + 1, x0 + 1, dy * dx),
                ]
            value, inside = np.zeros(channels), 0.0
            for yy, xx, weight in corners:
                if 0 <= yy < height and 0 <= xx < width:
                    value += weight * image[:, yy, xx]
                    inside += weight
            if interpolation == "nearest":
                out[:, r, c] = value if inside > 0.5 else fill
            else:
                out[:, r, c] = value * inside + (1 - inside) * fill
    return out


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_random_affine_matches_a_per_pixel_reference(interpolation):
    batch = _images(n=3, height=6, width=7)
    affine = RandomAffine(
        30, translate=(0.2, 0.3), scale=(0.8, 1.2), interpolation=interpolation, fill=0.25
    )
    params = affine.draw(np.random.default_rng(4), batch.shape)
    out = affine.apply(batch, params)
    assert out.shape == batch.shape and out.dtype == np.float32
    for n in range(3):
        expected = _affine_reference(
            batch[n],
            params["angle"][n],
            params["translate_x"][n],
            params["translate_y"][n],
            params["scale"][n],
            interpolation,
            0.25,
        )
        np.testing.assert_allclose(out[n], expected, rtol=1e-5, atol=1e-6)
    assert len(set(params["angle"].tolist())) == 3  # each image its own angle
    assert np.all(np.abs(params["angle"]) <= 30)
    assert np.all(params["translate_x"] == np.rint(params["translate_x"]))  # whole pixels


def test_random_affine_identity_and_whole_pixel_shift():
    batch = _images()
    for interpolation in ("nearest", "bilinear"):
        affine = RandomAffine(0, interpolation=interpolation)
        np.testing.assert_array_equal(affine(batch, 0), batch)
    shifted = RandomAffine(0).apply(
        batch,
        {
            "angle": np.zeros(4),
            "translate_x": np.array([1.0, 0, -2, 0]),
            "translate_y": np.array([0.0, 1, 0, 0]),
            "scale": np.ones(4),
        },
    )
    np.testing.assert_array_equal(shifted[0, :, :, 1:], batch[0, :, :, :-1])  # right by 1
    assert np.all(shifted[0, :, :, 0] == 0)
    np.testing.assert_array_equal(shifted[1, :, 1:], batch[1, :, :-1])  # down by 1
    np.testing.assert_array_equal(shifted[2, :, :, :-2], batch[2, :, :, 2:])  # left by 2
    np.testing.assert_array_equal(shifted[3], batch[3])


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_random_affine_matches_torchvision_tensor_path(interpolation):
    """torchvision.transforms.functional.affine on a tensor (its inverse matrix, its grid
    of pixel centres, grid_sample with a mask channel for the fill), written in torch."""
    torch = pytest.importorskip("torch")
    batch = _images(n=2, height=7, width=8)
    affine = RandomAffine(25, translate=(0.2, 0.2), scale=(0.9, 1.1), interpolation=interpolation)
    params = affine.draw(np.random.default_rng(5), batch.shape)
    out = affine.apply(batch, params)
    _, channels, height, width = batch.shape
    for n in range(2):
        rad = math.radians(params["angle"][n])
        tx, ty, scale = params["translate_x"][n], params["translate_y"][n], params["scale"][n]
        m = [
            v / scale
            for v in (math.cos(rad), math.sin(rad), 0.0, -math.sin(rad), math.cos(rad), 0.0)
        ]
        m[2] += m[0] * -tx + m[1] * -ty
        m[5] += m[3] * -tx + m[4] * -ty
        theta = torch.tensor(m, dtype=torch.float32).reshape(1, 2, 3)
        base = torch.empty(1, height, width, 3)
        base[..., 0] = torch.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, width)
        base[..., 1] = torch.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, height)[:, None]
        base[..., 2] = 1
        scaled = theta.transpose(1, 2) / torch.tensor([0.5 * width, 0.5 * height])
        grid = base.view(1, -1, 3).bmm(scaled).view(1, height, width, 2)
        image = torch.from_numpy(batch[n : n + 1])
        with_mask = torch.cat([image, torch.ones(1, 1, height, width)], dim=1)
        sampled = torch.nn.functional.grid_sample(
            with_mask, grid, mode=interpolation, padding_mode="zeros", align_corners=False
        )
        mask = sampled[:, -1:].expand(1, channels, height, width)
        sampled = sampled[:, :-1]
        if interpolation == "nearest":
            sampled[mask < 0.5] = 0.0
        else:
            sampled = sampled * mask
        np.testing.assert_allclose(out[n], sampled[0].numpy(), atol=1e-5)


# ------------------------------------------------------------------ randomness and Compose


def test_same_generator_same_result_and_parameters_per_image():
    batch = _images(n=5)
    pipeline = Compose([RandomCrop(4, padding=2), RandomHorizontalFlip(), Normalize(0.5, 0.2)])
    assert pipeline.needs_rng and not Compose([Normalize(0.5, 0.2)]).needs_rng
    first = pipeline(batch, np.random.default_rng(9))
    np.testing.assert_array_equal(pipeline(batch, np.random.default_rng(9)), first)
    np.testing.assert_array_equal(pipeline(batch, 9), first)  # an int seed is a generator too
    assert not np.array_equal(pipeline(batch, 10), first)
    assert pipeline(batch).shape == first.shape  # no rng: fresh entropy
    # identical images get different angles: the parameters are per image, and a batch's
    # result is each image's with its own parameters
    affine = RandomAffine(20, interpolation="bilinear")
    same = np.repeat(batch[:1], 8, axis=0)
    params = affine.draw(np.random.default_rng(3), same.shape)
    rotated = affine.apply(same, params)
    assert len({image.tobytes() for image in rotated}) == 8
    for n in (0, 7):
        alone = affine.apply(same[n : n + 1], {k: v[n : n + 1] for k, v in params.items()})
        np.testing.assert_array_equal(alone[0], rotated[n])


# ------------------------------------------------------------------------- DataLoader


def _loader(prefetch=True, seed=3, transform=None, n=40):
    images = np.random.default_rng(0).random((n, 1, 6, 6), dtype=np.float32)
    dataset = ArrayDataset(images, np.arange(n) % 10)
    transform = transform or Compose([RandomCrop(6, padding=1), RandomHorizontalFlip()])
    return DataLoader(dataset, 8, shuffle=True, seed=seed, transform=transform, prefetch=prefetch)


def _epochs(loader, count):
    return [[(x.copy(), y.copy()) for x, y in loader] for _ in range(count)]


def _assert_same(first, second):
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_augmented_batches_are_reproducible_resumable_and_prefetch_identical():
    straight = _epochs(_loader(), 3)
    _assert_same(straight[2], _epochs(_loader(prefetch=False), 3)[2])  # same bits, no thread
    _assert_same(straight[0], _epochs(_loader(), 1)[0])  # same seed, same batches
    assert not np.array_equal(straight[0][0][0], straight[1][0][0])  # epochs differ
    assert not np.array_equal(straight[0][0][0], _epochs(_loader(seed=4), 1)[0][0][0])
    resumed = _loader()
    resumed.load_state_dict({"seed": 3, "epoch": 2})
    _assert_same(_epochs(resumed, 1)[0], straight[2])
    # the stream is the loader's documented one
    loader = _loader(prefetch=False, transform=RandomHorizontalFlip())
    order = loader.order(0)
    images, _ = next(iter(loader))
    source = loader.dataset.images[order[:8]]
    expected = RandomHorizontalFlip()(source, loader.augmentation_rng(0, 0))
    np.testing.assert_array_equal(images, expected)


def test_fit_resumed_with_augmentation_continues_bit_for_bit(tmp_path):
    def run(epochs, checkpoint, resume=False):
        model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10, rng=np.random.default_rng(0)))
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        train.fit(
            model, nn.CrossEntropyLoss(), optimizer, _loader(), epochs=epochs,
            progress=False, checkpoint=tmp_path / checkpoint, resume=resume,
        )  # fmt: skip
        return model

    straight = run(3, "straight.npz")
    run(1, "interrupted.npz")  # a run stopped after its first epoch...
    resumed = run(3, "interrupted.npz", resume=True)  # ...and resumed
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "fastcnn-DataLoader-prefetch"]


def test_a_loop_stopped_early_leaves_no_thread():
    for _ in _loader():
        break
    assert not _prefetch_threads()
    try:
        for _ in _loader():
            raise ZeroDivisionError("the training step failed")
    except ZeroDivisionError:
        pass
    assert not _prefetch_threads()
    iterator = iter(_loader())
    next(iterator)
    assert len(_prefetch_threads()) == 1
    iterator.close()
    assert not _prefetch_threads()


def test_an_error_in_the_thread_is_raised_in_the_caller_with_its_traceback():
    def broken_transform(images):
        if images.shape[0]:
            raise RuntimeError("the transform failed")
        return images

    loader = _loader(transform=broken_transform)
    with pytest.raises(RuntimeError, match="the transform failed") as error:
        list(loader)
    assert any(entry.name == "broken_transform" for entry in error.traceback)
    assert not _prefetch_threads()


def test_an_unfinished_iterator_does_not_hang_the_exit():
    script = textwrap.dedent(
        """
        import numpy as np
        from fastcnn.data import ArrayDataset, DataLoader, RandomAffine
        data = ArrayDataset(np.zeros((64, 1, 8, 8), np.float32), np.zeros(64, np.int64))
        batches = iter(DataLoader(data, 4, transform=RandomAffine(10), prefetch=True))
        next(batches)  # the thread now waits, with a batch ready, for a caller that leaves
        print("done")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr


def test_lenet_takes_augmented_mnist_sized_batches():
    transform = Compose([RandomAffine(10, translate=(0.1, 0.1)), Normalize(0.13, 0.31)])
    images = np.random.default_rng(0).random((6, 1, 28, 28), dtype=np.float32)
    loader = DataLoader(ArrayDataset(images, np.arange(6)), 3, transform=transform, seed=0)
    model = models.LeNet5(rng=0)
    for x, y in loader:
        assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32 and x.flags.c_contiguous
        assert model(x).shape == (3, 10)
        np.testing.assert_array_equal(y, [0, 1, 2] if y[0] == 0 else [3, 4, 5])


# ------------------------------------------------------------------------------ errors


def test_augmentation_errors():
    with pytest.raises(ValueError, match=r"^RandomCrop: crop size \(8, 8\) is larger than"):
        RandomCrop(8)(_images())
    with pytest.raises(ValueError, match=r"^RandomCrop: padding must be >= 0 on every side"):
        RandomCrop(4, padding=-1)
    with pytest.raises(ValueError, match=r"^RandomHorizontalFlip: p must be a number in \[0"):
        RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match="^RandomAffine: degrees must be a number in"):
        RandomAffine(-5)
    with pytest.raises(ValueError, match=r"^RandomAffine expects one image \(C, H, W\)"):
        RandomAffine(5)(np.zeros((4, 4)))
    with pytest.raises(TypeError, match="^DataLoader: prefetch must be True or False"):
        DataLoader(ArrayDataset(np.zeros((2, 1, 2, 2)), [0, 1]), prefetch="no")
