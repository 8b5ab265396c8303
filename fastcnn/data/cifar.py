"""CIFAR-10 from the standard binary batches, with an optional verified download.

The binary version (``cifar-10-binary.tar.gz``, extracted to ``cifar-10-batches-bin/``)
holds ``data_batch_1.bin`` ... ``data_batch_5.bin`` (10,000 training images each),
``test_batch.bin`` (10,000) and ``batches.meta.txt`` (the class names, one a line). Each
record is one label byte and 3072 pixel bytes: the 1024 red values of the 32x32 image in
row-major order, then the 1024 green, then the 1024 blue. The Python version's batches are
pickles and are never read: unpickling a file runs whatever code it names.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import tarfile
import urllib.request
import zlib

import numpy as np
from numpy.typing import NDArray

from fastcnn._files import atomic_write
from fastcnn._validation import flag, real
from fastcnn.data.datasets import ArrayDataset
from fastcnn.data.mnist import DownloadError

__all__ = [
    "CIFAR10",
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_URL",
    "holds_cifar10",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # of the .tar.gz, as published
BATCHES_DIR = "cifar-10-batches-bin"  # what the archive extracts to
META_FILE = "batches.meta.txt"
CIFAR10_FILES = {
    True: tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    False: ("test_batch.bin",),
}

# The names batches.meta.txt lists, in label order (torchvision's CIFAR10.classes).
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# Per-channel (R, G, B) mean and standard deviation of the 50,000 training images in
# [0, 1]: the constants torchvision's CIFAR-10 recipes normalise with.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

CHANNELS, SIZE = 3, 32
RECORD_BYTES = 1 + CHANNELS * SIZE * SIZE  # 3073: one label byte, then R, G and B planes

_WHERE_TO_GET_IT = (
    "pass download=True to fetch it, or point root at the directory that holds "
    f"{BATCHES_DIR}/ (the binary version, cifar-10-binary.tar.gz, from "
    "https://www.cs.toronto.edu/~kriz/cifar.html)"
)


def _candidate_dirs(root: str) -> tuple[str, str]:
    """Where the batches may be: the extracted archive's directory inside root, or root."""
    return os.path.join(root, BATCHES_DIR), root


def holds_cifar10(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` holds CIFAR-10 binary batches (or a ``cifar-10-batches-bin/``)."""
    root = os.fspath(root)
    if os.path.isdir(os.path.join(root, BATCHES_DIR)):
        return True
    names = CIFAR10_FILES[True] + CIFAR10_FILES[False]
    return any(os.path.isfile(os.path.join(root, name)) for name in names)


def _dir_holding(root: str, names: tuple[str, ...]) -> str | None:
    """The first candidate directory holding every file in ``names``, if any does."""
    for directory in _candidate_dirs(root):
        if all(os.path.isfile(os.path.join(directory, name)) for name in names):
            return directory
    return None


def _find_batches_dir(root: str, names: tuple[str, ...]) -> str:
    """The directory holding every file in ``names``; else an error naming what is missing."""
    directory = _dir_holding(root, names)
    if directory is not None:
        return directory
    # Name a file missing from the directory that holds some of them, if one does.
    for directory in _candidate_dirs(root):
        present = [os.path.isfile(os.path.join(directory, name)) for name in names]
        if any(present):
            missing = names[present.index(False)]
            raise FileNotFoundError(
                f"CIFAR-10 file {missing} not found in {directory!r}, which holds some of the "
                f"batches; {_WHERE_TO_GET_IT}"
            )
    looked_in, _ = _candidate_dirs(root)
    raise FileNotFoundError(
        f"CIFAR-10 file {names[0]} not found in {looked_in!r} nor in {root!r}; {_WHERE_TO_GET_IT}"
    )


def _read_records(path: str) -> NDArray[np.uint8]:
    """The file's records as a ``(N, 3073)`` uint8 array, checked: whole records, labels 0-9."""
    with open(path, "rb") as file:
        raw = file.read()
    if not raw or len(raw) % RECORD_BYTES:
        raise ValueError(
            f"{path}: {len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 "
            "records (1 label byte + 3072 pixel bytes): the file is truncated or not a CIFAR-10 "
            "binary batch; download it again"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0]
    if labels.max() >= CIFAR10.num_classes:
        bad = int(np.flatnonzero(labels >= CIFAR10.num_classes)[0])
        raise ValueError(
            f"{path}: record {bad} has label {labels[bad]}, but CIFAR-10 labels lie in 0-9: "
            "the file is corrupt (or CIFAR-100's, whose records have 2 label bytes)"
        )
    return records


def _read_classes(directory: str) -> list[str]:
    """The class names of ``batches.meta.txt``, or the standard ten if the file is absent."""
    path = os.path.join(directory, META_FILE)
    if not os.path.isfile(path):
        return list(CIFAR10_CLASSES)
    with open(path, encoding="utf-8") as file:
        names = [line.strip() for line in file if line.strip()]
    if len(names) != CIFAR10.num_classes:
        raise ValueError(
            f"{path}: expected the {CIFAR10.num_classes} CIFAR-10 class names, one a line, "
            f"got {len(names)}; restore the file from the archive or delete it"
        )
    return names


def _fetch_archive(url: str, md5: str, timeout: float) -> bytes:
    """The archive's bytes, if their MD5 is the expected one."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            archive = response.read()
    except OSError as error:  # URLError, HTTPError and timeouts are OSErrors
        raise DownloadError(f"could not download {url}: {error}") from error
    actual = hashlib.md5(archive, usedforsecurity=False).hexdigest()
    if actual != md5:
        raise DownloadError(
            f"could not download {url}: MD5 mismatch, expected {md5}, got {actual} "
            "(a damaged or different file); nothing was written"
        )
    return archive


def _safe_members(archive: tarfile.TarFile, name: str) -> list[tarfile.TarInfo]:
    """The archive's regular files, each ``cifar-10-batches-bin/FILE``; anything else (a
    link, a device, an absolute path, ``..``, another directory) refuses the whole archive,
    before a byte is written."""
    files = []
    for member in archive.getmembers():
        # Only a name already in normal form, without backslashes (a separator on Windows):
        # "a/../b", "./a", "/a" and "a\\..\\b" are all refused.
        plain = member.name == posixpath.normpath(member.name) and "\\" not in member.name
        parts = member.name.split("/") if plain else []
        if member.isdir() and parts == [BATCHES_DIR]:
            continue
        if not (member.isfile() and len(parts) == 2 and parts[0] == BATCHES_DIR):
            raise ValueError(
                f"{name}: refusing to extract member {member.name!r}: a CIFAR-10 archive holds "
                f"only regular files in {BATCHES_DIR}/ (no links, no other paths)"
            )
        files.append(member)
    return files


def _extract(archive_bytes: bytes, root: str, name: str) -> None:
    """Write the archive's files into ``root/cifar-10-batches-bin``, each atomically."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:gz") as archive:
            members = _safe_members(archive, name)
            os.makedirs(os.path.join(root, BATCHES_DIR), exist_ok=True)
            for member in members:
                source = archive.extractfile(member)
                assert source is not None  # a regular file always has contents
                atomic_write(os.path.join(root, member.name), source.read())
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(f"{name}: not a valid .tar.gz archive ({error})") from None


class CIFAR10(ArrayDataset):
    """CIFAR-10 (torchvision's ``CIFAR10``), read from the standard binary batches.

    Parameters
    ----------
    root : str or os.PathLike
        Directory holding ``cifar-10-batches-bin/`` (as the archive extracts), or the
        ``.bin`` files themselves; looked for in that order.
    train : bool
        The 50,000 training images (``data_batch_1.bin`` ... ``data_batch_5.bin``, True)
        or the 10,000 test images (``test_batch.bin``, False).
    download : bool
        If the split's files are not in ``root``, fetch the archive from ``url``, check its
        MD5, and extract it into ``root/cifar-10-batches-bin/``. Files already present are
        used as they are.
    url : str, optional
        Where the archive is (default ``CIFAR10_URL``; ``file://`` works too).
    md5 : str, optional
        Its expected MD5 (default ``CIFAR10_MD5``).
    timeout : float
        Seconds to wait for the server.

    Attributes
    ----------
    images : numpy.ndarray
        float32 ``(N, 3, 32, 32)``, RGB, pixel values scaled to [0, 1].
    labels : numpy.ndarray
        int64 ``(N,)``, classes 0-9.
    classes : list of str
        The class names, by label (from ``batches.meta.txt``; the standard ten if absent).
    class_to_idx : dict
        Each name's label.
    """

    num_classes = 10

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool = True,
        download: bool = False,
        url: str = CIFAR10_URL,
        md5: str = CIFAR10_MD5,
        timeout: float = 60.0,
    ) -> None:
        self.root = os.fspath(root)
        self.train = flag(train, "train", "CIFAR10")
        download = flag(download, "download", "CIFAR10")
        timeout = real(timeout, "timeout", "CIFAR10", low=0, low_open=True)
        names = CIFAR10_FILES[self.train]
        if download and _dir_holding(self.root, names) is None:
            _extract(_fetch_archive(url, md5, timeout), self.root, url)
        directory = _find_batches_dir(self.root, names)
        records = [_read_records(os.path.join(directory, name)) for name in names]
        self.classes = _read_classes(directory)
        super().__init__(*_images_and_labels(records))

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: label for label, name in enumerate(self.classes)}

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"CIFAR10(root={self.root!r}, split={split}, size={len(self)})"


def _images_and_labels(
    records: list[NDArray[np.uint8]],
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The records of every file as float32 ``(N, 3, 32, 32)`` images in [0, 1] and labels."""
    count = sum(len(block) for block in records)
    images = np.empty((count, CHANNELS, SIZE, SIZE), dtype=np.float32)
    start = 0
    for block in records:  # straight into the float array: no uint8 concatenation first
        pixels = block[:, 1:].reshape(-1, CHANNELS, SIZE, SIZE)
        np.divide(pixels, np.float32(255), out=images[start : start + len(block)])
        start += len(block)
    labels = np.concatenate([block[:, 0] for block in records]).astype(np.int64)
    return images, labels
