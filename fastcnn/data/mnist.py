"""MNIST from the four standard IDX files, with an optional verified download."""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from fastcnn._files import atomic_write
from fastcnn._validation import flag, real
from fastcnn.data.datasets import ArrayDataset
from fastcnn.data.idx import read_idx

__all__ = ["MNIST", "MNIST_MIRRORS", "MNIST_SHA256", "DownloadError", "download_file"]

IMAGES_MAGIC = 2051  # 0x00000803: uint8, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: uint8, 1 dimension

# Base names of the (images, labels) files of each split; on disk as NAME.gz or NAME.
MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the *decompressed* IDX payload of each file. The payload is the same everywhere,
# while the gzip wrapping differs between mirrors (a re-compressed copy has other bytes), so
# hashing the payload verifies a download from any mirror that serves the genuine data.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# Tried in order; each serves NAME.gz. (The same list torchvision uses.)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


class DownloadError(OSError):
    """No mirror delivered a file whose contents match the expected SHA-256."""


def _fetch_verified(url, expected_sha256, timeout):
    """The gzip bytes at ``url``, if their decompressed payload has the expected hash."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read()
    try:
        payload = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"not a valid gzip file ({error})") from None
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected_sha256:
        raise ValueError(f"SHA-256 mismatch: expected {expected_sha256}, got {actual}")
    return data


def download_file(
    name: str,
    root: str | os.PathLike[str],
    mirrors: Sequence[str],
    sha256: str,
    timeout: float = 60.0,
) -> str:
    """Fetch ``NAME.gz`` from the first mirror that serves it intact; write it to ``root``.

    Parameters
    ----------
    name : str
        Base file name, e.g. ``"train-images-idx3-ubyte"``.
    root : str or os.PathLike
        Directory to write ``NAME.gz`` into (created if needed).
    mirrors : sequence of str
        Base URLs (``http(s)://`` or ``file://``), tried in order.
    sha256 : str
        Expected SHA-256 of the decompressed payload.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    DownloadError
        Every mirror failed; the message lists each mirror's error.
    """
    timeout = real(timeout, "timeout", "download_file", low=0, low_open=True)
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name + ".gz"
        try:
            data = _fetch_verified(url, sha256, timeout)
        except (OSError, ValueError) as error:  # URLError/HTTPError/timeouts are OSErrors
            failures.append(f"  {url}: {error}")
            continue
        os.makedirs(root, exist_ok=True)
        path = os.path.join(root, name + ".gz")
        atomic_write(path, data)
        return path
    raise DownloadError(
        f"could not download {name}.gz from any mirror:\n" + "\n".join(failures)
        if failures
        else f"could not download {name}.gz: no mirrors given"
    )


def _find_file(root, name, download_hint):
    for candidate in (name + ".gz", name):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"MNIST file {name}.gz (or {name}) not found in {root!r}; {download_hint}"
    )


def _check_mnist_arrays(images_path, images_magic, images, labels_path, labels_magic, labels):
    """Magic numbers, dimensions, matching counts and label range of an MNIST pair."""
    if images_magic != IMAGES_MAGIC or images.ndim != 3:
        raise ValueError(
            f"{images_path}: wrong magic number {images_magic} (0x{images_magic:08x}) for an "
            f"MNIST image file; expected {IMAGES_MAGIC} (0x{IMAGES_MAGIC:08x}: uint8, 3 dims)"
        )
    if labels_magic != LABELS_MAGIC or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: wrong magic number {labels_magic} (0x{labels_magic:08x}) for an "
            f"MNIST label file; expected {LABELS_MAGIC} (0x{LABELS_MAGIC:08x}: uint8, 1 dim)"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the two files do not belong together"
        )
    if min(images.shape) == 0:
        raise ValueError(f"{images_path}: empty image array of shape {images.shape}")
    if labels.max() >= MNIST.num_classes:
        raise ValueError(
            f"{labels_path}: label {labels.max()} is out of range; MNIST labels lie in [0, 10)"
        )


class MNIST(ArrayDataset):
    """The MNIST handwritten digits, read from the standard IDX files in ``root``.

    Parameters
    ----------
    root : str or os.PathLike
        Directory holding ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
        ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (or the same names
        uncompressed).
    train : bool
        The 60,000 training images (True) or the 10,000 test images (False).
    download : bool
        Fetch missing files from ``mirrors`` into ``root`` first, checking each against its
        SHA-256. Files already present are used as they are.
    mirrors : sequence of str, optional
        Base URLs tried in order (default ``MNIST_MIRRORS``); the next is tried whenever one
        fails or serves a file with the wrong hash.
    sha256 : dict, optional
        Expected SHA-256 of each decompressed file, by base name (default ``MNIST_SHA256``).

    Attributes
    ----------
    images : numpy.ndarray
        float32 ``(N, 1, 28, 28)``, pixel values scaled to [0, 1].
    labels : numpy.ndarray
        int64 ``(N,)``, digits 0-9.
    """

    num_classes = 10

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool = True,
        download: bool = False,
        mirrors: Sequence[str] | None = None,
        sha256: Mapping[str, str] | None = None,
    ) -> None:
        self.root = os.fspath(root)
        self.train = flag(train, "train", "MNIST")
        download = flag(download, "download", "MNIST")
        images_name, labels_name = MNIST_FILES[self.train]
        if download:
            self._download_missing((images_name, labels_name), mirrors, sha256)
        hint = "pass download=True to fetch it, or point root at the directory that holds it"
        images_path = _find_file(self.root, images_name, hint)
        labels_path = _find_file(self.root, labels_name, hint)
        images_magic, images = read_idx(images_path)
        labels_magic, labels = read_idx(labels_path)
        _check_mnist_arrays(images_path, images_magic, images, labels_path, labels_magic, labels)
        super().__init__((images[:, None] / np.float32(255)).astype(np.float32), labels)

    def _download_missing(self, names, mirrors, sha256):
        mirrors = MNIST_MIRRORS if mirrors is None else tuple(mirrors)
        sha256 = MNIST_SHA256 if sha256 is None else sha256
        for name in names:
            if any(os.path.isfile(os.path.join(self.root, name + ext)) for ext in (".gz", "")):
                continue
            if name not in sha256:
                raise KeyError(
                    f"no SHA-256 given for {name!r}; sha256 must map each file name to its hash"
                )
            download_file(name, self.root, mirrors, sha256[name])

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"MNIST(root={self.root!r}, split={split}, size={len(self)})"
