"""Regenerate fastcnn's embedded MNIST subset (fastcnn/data/embedded/) from the full dataset.

Draws a class-balanced random subset (600 training and 100 test images per digit by default,
seeded, kept in the original order) and writes it as the four standard gzip IDX files, so
``fastcnn.data.MNIST`` reads it like the full dataset. The gzip output carries no time stamp:
the same inputs and seed give the same bytes.

    python tools/make_embedded_mnist.py --source /path/to/mnist --seed 0
"""

import argparse
import os

import numpy as np

from fastcnn.data.idx import read_idx, write_idx
from fastcnn.data.mnist import MNIST_FILES

DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "..", "fastcnn", "data", "embedded")


def balanced_subset(labels, per_class, rng):
    """Indices of ``per_class`` random items of each class, in ascending order."""
    chosen = [
        rng.choice(np.flatnonzero(labels == digit), size=per_class, replace=False)
        for digit in range(10)
    ]
    return np.sort(np.concatenate(chosen))


def write_split(source, out, train, per_class, rng):
    images_name, labels_name = MNIST_FILES[train]
    _, images = read_idx(os.path.join(source, images_name + ".gz"))
    _, labels = read_idx(os.path.join(source, labels_name + ".gz"))
    keep = balanced_subset(labels, per_class, rng)
    write_idx(os.path.join(out, images_name + ".gz"), images[keep])
    write_idx(os.path.join(out, labels_name + ".gz"), labels[keep])
    return len(keep)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        default="/work/shared/datasets/mnist",
        help="directory with the full MNIST gzip IDX files",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    n_train = write_split(args.source, args.out, True, args.train_per_class, rng)
    n_test = write_split(args.source, args.out, False, args.test_per_class, rng)
    print(f"wrote {n_train} training and {n_test} test images to {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
