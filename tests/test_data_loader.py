"""ArrayDataset, Subset, random_split, filter_classes, one_hot, transforms and DataLoader."""

import numpy as np
import pytest

from fastcnn.data import (
    ArrayDataset,
    AvgDownsample2x2,
    Compose,
    DataLoader,
    Dataset,
    Normalize,
    Pad,
    Subset,
    filter_classes,
    one_hot,
    random_split,
)


def _dataset(n=23, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, 4, 4), dtype=np.float32)
    return ArrayDataset(images, np.arange(n) % 10)


class _PlainDataset(Dataset):
    """Item access only: the DataLoader must fall back to the per-item gather."""

    def __init__(self, inner):
        self.inner = inner
        self.labels = inner.labels

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        return self.inner[index]


# ---------------------------------------------------------------------------- datasets


def test_array_dataset_basics():
    data = _dataset()
    assert len(data) == 23
    image, label = data[-1]
    assert image.shape == (1, 4, 4) and label == 2
    images, labels = data.gather([0, 5, -1])
    np.testing.assert_array_equal(labels, [0, 5, 2])
    assert images.dtype == np.float32 and labels.dtype == np.int64
    three_d = ArrayDataset(np.zeros((2, 4, 4), np.uint8), [0, 1])
    assert three_d.images.shape == (2, 1, 4, 4)


def test_array_dataset_errors():
    with pytest.raises(ValueError, match=r"has 3 images but 2 labels"):
        ArrayDataset(np.zeros((3, 1, 2, 2)), [0, 1])
    with pytest.raises(
        ValueError, match=r"must be \(N, C, H, W\) or \(N, H, W\), got shape \(3, 2\)"
    ):
        ArrayDataset(np.zeros((3, 2)), [0, 1, 2])
    with pytest.raises(TypeError, match=r"labels must be a 1-d integer array, .*float64"):
        ArrayDataset(np.zeros((2, 1, 2, 2)), [0.0, 1.0])
    data = _dataset()
    with pytest.raises(IndexError, match="index 23 is out of range for ArrayDataset of length 23"):
        data[23]
    with pytest.raises(IndexError, match="index -30 is out of range"):
        data.gather([0, -30])
    with pytest.raises(TypeError, match="indices must be integers, got float"):
        data[1.0]


def test_subset_and_default_gather_agree():
    data = _dataset()
    subset = Subset(data, [4, 2, 9])
    np.testing.assert_array_equal(subset.labels, [4, 2, 9])
    images, labels = subset.gather([2, 0])
    np.testing.assert_array_equal(images, data.images[[9, 4]])
    plain = _PlainDataset(data)
    plain_images, plain_labels = plain.gather([9, 4])
    np.testing.assert_array_equal(plain_images, images)
    np.testing.assert_array_equal(plain_labels, labels)
    with pytest.raises(IndexError, match="index 3 is out of range for Subset of length 3"):
        subset[3]


def test_random_split_is_seeded_and_disjoint():
    data = _dataset(n=20)
    first = random_split(data, [15, 5], seed=3)
    again = random_split(data, [15, 5], seed=3)
    np.testing.assert_array_equal(first[0].indices, again[0].indices)
    assert sorted(np.concatenate([s.indices for s in first]).tolist()) == list(range(20))
    fractions = random_split(data, [0.7, 0.3], seed=3)
    assert [len(s) for s in fractions] == [14, 6]
    odd = random_split(_dataset(n=7), [0.5, 0.5], seed=0)
    assert [len(s) for s in odd] == [4, 3]  # the remainder goes to the first, as torch


def test_random_split_errors():
    with pytest.raises(
        ValueError, match=r"lengths \[10, 5\] must be non-negative and sum to .* 20"
    ):
        random_split(_dataset(n=20), [10, 5])
    with pytest.raises(
        ValueError, match=r"fractions \[0.5, 0.2\] must each lie in \[0, 1\] and sum to 1"
    ):
        random_split(_dataset(n=20), [0.5, 0.2])
    with pytest.raises(TypeError, match="^random_split: seed must be an int or None, got str"):
        random_split(_dataset(n=20), [10, 10], seed="0")


def test_filter_classes_keeps_labels():
    data = _dataset(n=30)
    low = filter_classes(data, range(5))
    assert len(low) == 15 and set(low.labels.tolist()) == {0, 1, 2, 3, 4}
    _, labels = low.gather(np.arange(len(low)))
    assert labels.max() == 4
    with pytest.raises(ValueError, match=r"none of the classes \[42\] occurs"):
        filter_classes(data, [42])
    with pytest.raises(ValueError, match="non-empty list of integer classes"):
        filter_classes(data, [])


def test_one_hot_matches_torch_semantics():
    encoded = one_hot(np.array([[0, 2], [1, 0]]), 3)
    assert encoded.dtype == np.int64 and encoded.shape == (2, 2, 3)
    np.testing.assert_array_equal(encoded[0, 1], [0, 0, 1])
    assert one_hot(np.array([3, 1])).shape == (2, 4)
    assert one_hot(np.array([1]), 2, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match=r"label 5 is out of range for num_classes=3"):
        one_hot(np.array([5]), 3)
    with pytest.raises(ValueError, match="labels must be >= 0, got -1"):
        one_hot(np.array([-1]), 3)
    with pytest.raises(TypeError, match="integer labels, got dtype float64"):
        one_hot(np.array([1.0]), 3)
    with pytest.raises(TypeError, match="^one_hot: num_classes must be an int, got float 3.0"):
        one_hot(np.array([1]), 3.0)
    assert one_hot(np.array([1]), np.int64(2)).shape == (1, 2)


# ---------------------------------------------------------------------------- transforms


def test_normalize_per_channel():
    x = np.ones((2, 3, 2, 2), np.float32)
    out = Normalize([0.5, 1.0, 0.0], [0.5, 1.0, 2.0])(x)
    np.testing.assert_allclose(out[0, :, 0, 0], [1.0, 0.0, 0.5])
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="has 2 mean values but the images have 3 channels"):
        Normalize([0.1, 0.2], 1.0)(x)
    with pytest.raises(ValueError, match="std must be non-zero"):
        Normalize(0.0, 0.0)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\), got shape \(4, 4\)"):
        Normalize(0.0, 1.0)(np.zeros((4, 4)))


def test_pad_and_downsample():
    x = np.arange(2 * 1 * 28 * 28, dtype=np.float32).reshape(2, 1, 28, 28)
    padded = Pad(2)(x)
    assert padded.shape == (2, 1, 32, 32)
    np.testing.assert_array_equal(padded[:, :, 2:-2, 2:-2], x)
    assert padded[:, :, :2].sum() == 0
    small = AvgDownsample2x2()(x)
    assert small.shape == (2, 1, 14, 14) and small.dtype == np.float32
    np.testing.assert_allclose(small[1, 0, 3, 5], x[1, 0, 6:8, 10:12].mean())
    single = AvgDownsample2x2()(x[0])  # one (C, H, W) image works as well
    np.testing.assert_array_equal(single, small[0])
    with pytest.raises(ValueError, match="^Pad: padding must be >= 0, got -1"):
        Pad(-1)
    with pytest.raises(TypeError, match="^Pad: padding must be an int, got float 1.5"):
        Pad(1.5)
    with pytest.raises(TypeError, match="^Pad: fill must be a real number, got str '0'"):
        Pad(1, fill="0")
    assert Pad(np.int64(2)).padding == 2
    with pytest.raises(ValueError, match="needs images at least 2x2"):
        AvgDownsample2x2()(np.zeros((1, 1, 1, 5)))


def test_compose():
    pipeline = Compose([Pad(2), Normalize(0.5, 0.5)])
    out = pipeline(np.zeros((1, 1, 2, 2), np.float32))
    assert out.shape == (1, 1, 6, 6) and np.all(out == -1)
    with pytest.raises(TypeError, match="Compose takes callables"):
        Compose([3])


# ---------------------------------------------------------------------------- DataLoader


def test_loader_shapes_dtypes_and_cover_everything():
    data = _dataset(n=23)
    loader = DataLoader(data, batch_size=5, shuffle=True, seed=0)
    batches = list(loader)
    assert len(loader) == len(batches) == 5
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    for images, labels in batches:
        assert images.dtype == np.float32 and labels.dtype == np.int64
        assert images.flags.c_contiguous and images.shape[1:] == (1, 4, 4)
    seen = np.concatenate([y for _, y in batches])
    assert sorted(seen.tolist()) == sorted(data.labels.tolist())


def test_shards_cut_every_batch_into_contiguous_blocks_in_order():
    data = _dataset(n=23)
    whole = list(DataLoader(data, batch_size=6, shuffle=True, seed=1))
    shards = [list(DataLoader(data, 6, shuffle=True, seed=1, shard=(i, 4))) for i in range(4)]
    assert all(len(shard) == len(whole) == 4 for shard in shards)
    for batch, (images, labels) in enumerate(whole):
        blocks = [shard[batch] for shard in shards]
        # 6 items: blocks of 2, 2, 1, 1; the last batch's 5: 2, 1, 1, 1
        assert [len(y) for _, y in blocks] == ([2, 2, 1, 1] if batch < 3 else [2, 1, 1, 1])
        np.testing.assert_array_equal(np.concatenate([x for x, _ in blocks]), images)
        np.testing.assert_array_equal(np.concatenate([y for _, y in blocks]), labels)


@pytest.mark.parametrize("prefetch", [True, False])
def test_shards_of_a_randomly_augmented_batch_are_its_blocks(prefetch):
    """Each image gets the augmentation it gets in one process (the ranks' bits equal
    accumulate's), so a random transform sees the whole batch before the block is cut."""
    from fastcnn.data import RandomAffine

    data, augment = _dataset(n=23), RandomAffine(30, translate=(0.2, 0.2))
    options = dict(shuffle=True, seed=1, transform=augment, prefetch=prefetch)
    whole = list(DataLoader(data, 6, **options))
    shards = [list(DataLoader(data, 6, shard=(i, 4), **options)) for i in range(4)]
    for batch, (images, labels) in enumerate(whole):
        blocks = [shard[batch] for shard in shards]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in blocks]), images)
        np.testing.assert_array_equal(np.concatenate([y for _, y in blocks]), labels)


def test_a_shard_of_a_batch_smaller_than_the_shards_is_empty_and_shaped():
    items = _PlainDataset(_dataset(n=3))  # the per-item gather too
    images, labels = next(iter(DataLoader(items, batch_size=3, shard=(3, 4))))
    assert images.shape == (0, 1, 4, 4) and images.dtype == np.float32
    assert labels.shape == (0,) and labels.dtype == np.int64


def test_drop_last():
    loader = DataLoader(_dataset(n=23), batch_size=5, drop_last=True)
    assert len(loader) == 4 and [len(y) for _, y in loader] == [5, 5, 5, 5]


def test_unshuffled_order_is_dataset_order():
    data = _dataset(n=7)
    images, labels = next(iter(DataLoader(data, batch_size=7)))
    np.testing.assert_array_equal(images, data.images)
    np.testing.assert_array_equal(labels, data.labels)


def _epoch_orders(loader, epochs):
    return [np.concatenate([y for _, y in loader]) for _ in range(epochs)]


def test_shuffle_is_deterministic_and_changes_per_epoch():
    data = ArrayDataset(np.zeros((50, 1, 1, 1)), np.arange(50))
    first = _epoch_orders(DataLoader(data, batch_size=8, shuffle=True, seed=7), 3)
    second = _epoch_orders(DataLoader(data, batch_size=8, shuffle=True, seed=7), 3)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])
    other = _epoch_orders(DataLoader(data, batch_size=8, shuffle=True, seed=8), 1)
    assert not np.array_equal(first[0], other[0])


def test_epoch_order_is_resumable():
    data = ArrayDataset(np.zeros((50, 1, 1, 1)), np.arange(50))
    straight = _epoch_orders(DataLoader(data, batch_size=8, shuffle=True, seed=7), 3)
    loader = DataLoader(data, batch_size=8, shuffle=True, seed=7)
    loader.set_epoch(2)
    np.testing.assert_array_equal(_epoch_orders(loader, 1)[0], straight[2])
    unseeded = DataLoader(data, batch_size=8, shuffle=True)
    first = _epoch_orders(unseeded, 1)[0]
    state = unseeded.state_dict()
    resumed = DataLoader(data, batch_size=8, shuffle=True)
    resumed.load_state_dict(state)
    assert state["epoch"] == 1
    np.testing.assert_array_equal(_epoch_orders(resumed, 1)[0], _epoch_orders(unseeded, 1)[0])
    unseeded.set_epoch(0)
    np.testing.assert_array_equal(_epoch_orders(unseeded, 1)[0], first)


def test_loader_load_state_dict_errors():
    loader = DataLoader(_dataset(), batch_size=4, shuffle=True, seed=5)
    with pytest.raises(
        TypeError, match="^DataLoader.load_state_dict: state must be a dict, got list"
    ):
        loader.load_state_dict([5, 1])
    with pytest.raises(
        ValueError,
        match=r"exactly the keys \['epoch', 'seed'\] .*got "
        r"\['epoch', 'seed', 'shuffle'\]",
    ):
        loader.load_state_dict({"seed": 1, "epoch": 2, "shuffle": True})
    with pytest.raises(ValueError, match="^DataLoader.load_state_dict: epoch must be >= 0, got -2"):
        loader.load_state_dict({"seed": 1, "epoch": -2})
    with pytest.raises(
        TypeError, match="^DataLoader.load_state_dict: seed must be an int, got str '1'"
    ):
        loader.load_state_dict({"seed": "1", "epoch": 2})
    assert loader.state_dict() == {"seed": 5, "epoch": 0}  # a refused state changes nothing


def test_random_split_lengths_type_errors():
    data = _dataset(n=8)
    for bad, shown in ((5, "int 5"), ([4, "4"], "list \\[4, '4'\\]"), ([True, 7], "list")):
        with pytest.raises(TypeError, match=f"random_split lengths must be a sequence .*{shown}"):
            random_split(data, bad)
    assert [len(s) for s in random_split(data, (n for n in (3, 5)), seed=0)] == [3, 5]


def test_loader_transform_and_plain_dataset():
    data = _dataset(n=9)
    loader = DataLoader(_PlainDataset(data), batch_size=4, transform=Pad(1))
    images, labels = next(iter(loader))
    assert images.shape == (4, 1, 6, 6)
    np.testing.assert_array_equal(images[:, :, 1:-1, 1:-1], data.images[:4])


def test_loader_errors():
    data = _dataset()
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"^DataLoader: batch_size must be >= 1, got {bad}"):
            DataLoader(data, batch_size=bad)
    with pytest.raises(TypeError, match="^DataLoader: batch_size must be an int, got float 2.5"):
        DataLoader(data, batch_size=2.5)
    with pytest.raises(ValueError, match="^DataLoader: seed must be >= 0, got -1"):
        DataLoader(data, seed=-1)
    with pytest.raises(TypeError, match="^DataLoader: seed must be an int or None, got str"):
        DataLoader(data, seed="0")
    with pytest.raises(TypeError, match="^DataLoader: shuffle must be True or False, got 'yes'"):
        DataLoader(data, shuffle="yes")
    with pytest.raises(TypeError, match="^DataLoader: drop_last must be True or False, got 1"):
        DataLoader(data, drop_last=1)
    assert len(DataLoader(data, batch_size=np.int64(4), seed=np.uint8(3))) > 0
    with pytest.raises(ValueError, match="empty dataset"):
        DataLoader(Subset(data, []))
    with pytest.raises(TypeError, match="transform must be callable"):
        DataLoader(data, transform="pad")
