"""The small MNIST subset shipped inside the package (see ``fastcnn/data/embedded/README.md``)."""

from __future__ import annotations

import os

from fastcnn.data.mnist import MNIST

__all__ = ["EMBEDDED_MNIST_DIR", "embedded_mnist"]

EMBEDDED_MNIST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded")


def embedded_mnist(train: bool = True) -> MNIST:
    """The embedded MNIST subset: 6,000 training or 1,000 test images (600/100 per digit).

    Parameters
    ----------
    train : bool
        The training subset (True) or the test subset (False).

    Returns
    -------
    MNIST
        float32 ``(N, 1, 28, 28)`` images in [0, 1] and int64 labels, as ``MNIST`` gives.
        Real MNIST data, under CC BY-SA 3.0 (attribution in the README next to the files).
    """
    return MNIST(EMBEDDED_MNIST_DIR, train=train)
