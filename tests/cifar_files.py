"""Tiny CIFAR-10 binary batches for the tests, written record by record from the format's
definition (one label byte, then the 1024 red, 1024 green and 1024 blue bytes of the 32x32
image, row-major), sharing no code with fastcnn's reader."""

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]


def batch_bytes(images, labels):
    """The bytes of a batch file: ``images`` (N, 32, 32, 3) uint8 RGB, ``labels`` (N,)."""
    records = []
    for image, label in zip(images, labels, strict=True):
        planes = [image[:, :, channel].tobytes() for channel in range(3)]
        records.append(bytes([int(label)]) + b"".join(planes))
    return b"".join(records)


def random_images(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return images, np.arange(n) % 10  # every class present


def write_cifar10(directory, per_batch=20, n_test=10, meta=True):
    """Write the six batch files (and batches.meta.txt) into ``directory``.

    Returns ``{True: (images, labels), False: (images, labels)}``: the train split (the
    five batches in order) and the test split, images (N, 32, 32, 3) uint8 RGB.
    """
    directory.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = [], []
    for i, name in enumerate(TRAIN_FILES):
        images, labels = random_images(per_batch, seed=i)
        (directory / name).write_bytes(batch_bytes(images, labels))
        train_images.append(images)
        train_labels.append(labels)
    test = random_images(n_test, seed=99)
    (directory / "test_batch.bin").write_bytes(batch_bytes(*test))
    if meta:
        (directory / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n\n")
    return {True: (np.concatenate(train_images), np.concatenate(train_labels)), False: test}
