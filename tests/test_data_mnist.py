"""MNIST / IDX reading and the verified download, on tiny IDX files generated here."""

import functools
import gzip
import hashlib
import http.server
import os
import struct
import threading

import numpy as np
import pytest

from fastcnn.data import MNIST, DownloadError, embedded_mnist, read_idx, write_idx
from fastcnn.data.idx import idx_bytes
from fastcnn.data.mnist import MNIST_FILES

N_IMAGES = 12


def _tiny_mnist(seed=0, n=N_IMAGES, size=28):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return images, labels


def _write_split(directory, train=True, compressed=True, seed=0, n=N_IMAGES):
    images, labels = _tiny_mnist(seed, n)
    ext = ".gz" if compressed else ""
    images_name, labels_name = MNIST_FILES[train]
    write_idx(directory / (images_name + ext), images)
    write_idx(directory / (labels_name + ext), labels)
    return images, labels


@pytest.mark.parametrize("compressed", [True, False])
def test_mnist_reads_idx_files(tmp_path, compressed):
    images, labels = _write_split(tmp_path, train=False, compressed=compressed)
    dataset = MNIST(tmp_path, train=False)
    assert len(dataset) == N_IMAGES
    assert dataset.images.dtype == np.float32 and dataset.images.shape == (N_IMAGES, 1, 28, 28)
    assert dataset.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.images[:, 0] * 255, images.astype(np.float32))
    np.testing.assert_array_equal(dataset.labels, labels)
    image, label = dataset[3]
    assert image.shape == (1, 28, 28) and label == labels[3]
    assert dataset.images.min() >= 0 and dataset.images.max() <= 1


def test_idx_round_trip_every_type(tmp_path):
    rng = np.random.default_rng(1)
    for dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
        path = tmp_path / f"a-{np.dtype(dtype).name}.idx.gz"
        write_idx(path, array)
        magic, back = read_idx(path)
        assert magic >> 8 in (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E) and magic & 0xFF == 3
        np.testing.assert_array_equal(back, array)
        assert back.dtype == np.dtype(dtype)


def test_write_idx_is_reproducible(tmp_path):
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(TypeError, match="IDX cannot store .* dtype int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def test_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz .*download=True"):
        MNIST(tmp_path)


def test_wrong_magic_names_the_file(tmp_path):
    _write_split(tmp_path)
    images_name, labels_name = MNIST_FILES[True]
    # A label file where the image file should be: valid IDX, wrong magic (2049, not 2051).
    write_idx(tmp_path / (images_name + ".gz"), np.zeros(N_IMAGES, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: wrong magic number 2049"):
        MNIST(tmp_path)


def test_not_an_idx_file(tmp_path):
    _write_split(tmp_path)
    with gzip.open(tmp_path / (MNIST_FILES[True][1] + ".gz"), "wb") as file:
        file.write(b"<html>not found</html>")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz: not an IDX file"):
        MNIST(tmp_path)


def test_truncated_data_names_the_file(tmp_path):
    _write_split(tmp_path, compressed=False)
    path = tmp_path / MNIST_FILES[True][0]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated: .*\(12, 28, 28\)"):
        MNIST(tmp_path)


def test_truncated_gzip_stream(tmp_path):
    _write_split(tmp_path)
    path = tmp_path / (MNIST_FILES[True][0] + ".gz")
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte.gz: the gzip stream is truncated"
    ):
        MNIST(tmp_path)


def test_trailing_bytes(tmp_path):
    _write_split(tmp_path, compressed=False)
    path = tmp_path / MNIST_FILES[True][1]
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: 2 unexpected trailing bytes"):
        MNIST(tmp_path)


def test_short_header(tmp_path):
    _write_split(tmp_path, compressed=False)
    path = tmp_path / MNIST_FILES[True][1]
    path.write_bytes(struct.pack(">I", 2049) + b"\0\0")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: truncated IDX header"):
        MNIST(tmp_path)


def test_count_mismatch(tmp_path):
    _write_split(tmp_path)
    write_idx(tmp_path / (MNIST_FILES[True][1] + ".gz"), np.zeros(N_IMAGES - 2, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"holds 12 images but .* holds 10 labels"):
        MNIST(tmp_path)


def test_label_out_of_range(tmp_path):
    _write_split(tmp_path)
    write_idx(tmp_path / (MNIST_FILES[True][1] + ".gz"), np.full(N_IMAGES, 12, dtype=np.uint8))
    with pytest.raises(
        ValueError, match=r"label 12 is out of range; MNIST labels lie in \[0, 10\)"
    ):
        MNIST(tmp_path)


def test_embedded_subset_is_real_balanced_mnist():
    train, test = embedded_mnist(train=True), embedded_mnist(train=False)
    assert train.images.shape == (6000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 600))
    np.testing.assert_array_equal(np.bincount(test.labels), np.full(10, 100))
    # Real digits: mostly background, a stroke of bright pixels (MNIST's mean is ~0.13).
    assert 0.1 < train.images.mean() < 0.16
    readme = os.path.join(os.path.dirname(train.root), "embedded", "README.md")
    with open(readme, encoding="utf-8") as file:
        assert "Creative Commons Attribution-Share Alike 3.0" in file.read()


# ----------------------------------------------------------------------------- download


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_mirror(tmp_path):
    """Serve tmp_path/"served" on 127.0.0.1 at an ephemeral port; yield (dir, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _serve_split(directory, seed=0):
    images, labels = _write_split(directory, train=True, seed=seed)
    names = MNIST_FILES[True]
    hashes = {
        name: hashlib.sha256(idx_bytes(a)).hexdigest()
        for name, a in zip(names, (images, labels), strict=True)
    }
    return images, labels, hashes


def test_download_from_local_mirror(tmp_path, http_mirror):
    served, url = http_mirror
    (served / "good").mkdir()
    images, labels, hashes = _serve_split(served / "good")
    root = tmp_path / "data"
    dataset = MNIST(root, train=True, download=True, mirrors=[url + "/good/"], sha256=hashes)
    np.testing.assert_array_equal(dataset.labels, labels)
    np.testing.assert_array_equal(dataset.images[:, 0] * 255, images.astype(np.float32))
    assert sorted(os.listdir(root)) == sorted(name + ".gz" for name in MNIST_FILES[True])


def test_download_tries_next_mirror(tmp_path, http_mirror):
    served, url = http_mirror
    (served / "corrupt").mkdir()
    (served / "good").mkdir()
    _serve_split(served / "corrupt", seed=1)  # other data: the hashes will not match
    _, labels, hashes = _serve_split(served / "good", seed=0)
    mirrors = [url + "/missing/", url + "/corrupt/", url + "/good"]
    dataset = MNIST(tmp_path / "data", download=True, mirrors=mirrors, sha256=hashes)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_download_fails_with_every_mirror_listed(tmp_path, http_mirror):
    served, url = http_mirror
    (served / "corrupt").mkdir()
    _, _, hashes = _serve_split(served / "corrupt", seed=1)
    hashes = {name: "0" * 64 for name in hashes}
    mirrors = [url + "/missing/", url + "/corrupt/"]
    with pytest.raises(
        DownloadError,
        match=r"(?s)train-images-idx3-ubyte.gz from any mirror.*"
        r"/missing/.*404.*/corrupt/.*SHA-256 mismatch: expected 0000",
    ):
        MNIST(tmp_path / "data", download=True, mirrors=mirrors, sha256=hashes)
    # Nothing was written: no partial or unverified file is left behind.
    assert not (tmp_path / "data").exists() or os.listdir(tmp_path / "data") == []


def test_download_keeps_present_files(tmp_path):
    _, labels = _write_split(tmp_path)
    # No mirror needed (and none reachable): the files are already there.
    dataset = MNIST(tmp_path, download=True, mirrors=[], sha256={})
    np.testing.assert_array_equal(dataset.labels, labels)


def test_download_from_file_url(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    _, labels, hashes = _serve_split(source)
    dataset = MNIST(tmp_path / "data", download=True, mirrors=[source.as_uri()], sha256=hashes)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_flags_are_true_or_false(tmp_path):
    with pytest.raises(TypeError, match="^MNIST: train must be True or False, got 'test'"):
        MNIST(tmp_path, train="test")  # a non-empty string would have meant the train split
    with pytest.raises(TypeError, match="^MNIST: download must be True or False, got 'no'"):
        MNIST(tmp_path, download="no")
