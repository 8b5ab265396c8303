"""CIFAR-10 from binary batches and its verified download, on tiny files written here."""

import hashlib
import io
import os
import tarfile

import numpy as np
import pytest
from cifar_files import CLASSES, TRAIN_FILES, write_cifar10

from fastcnn.data import CIFAR10, CIFAR10_MEAN, CIFAR10_STD, DataLoader, DownloadError
from fastcnn.data.cifar import holds_cifar10

PER_BATCH, N_TEST = 20, 10


def as_nchw(images):
    """(N, 32, 32, 3) uint8 RGB -> what CIFAR10 holds: (N, 3, 32, 32) float32 in [0, 1]."""
    return images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)


@pytest.mark.parametrize("layout", ["extracted archive", "files in root"])
@pytest.mark.parametrize("train", [True, False])
def test_reads_each_split(tmp_path, layout, train):
    directory = tmp_path / "cifar-10-batches-bin" if layout == "extracted archive" else tmp_path
    written = write_cifar10(directory, PER_BATCH, N_TEST)
    dataset = CIFAR10(tmp_path, train=train)
    images, labels = written[train]
    assert len(dataset) == (5 * PER_BATCH if train else N_TEST)
    assert dataset.images.dtype == np.float32 and dataset.images.shape == (len(dataset), 3, 32, 32)
    assert dataset.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.labels, labels)
    np.testing.assert_array_equal(dataset.images, as_nchw(images))
    assert dataset.images.min() >= 0 and dataset.images.max() <= 1
    assert holds_cifar10(tmp_path)


def test_pixel_layout(tmp_path):
    """One record spelt out byte by byte: R plane, G plane, B plane, each row-major."""
    red, green, blue = bytearray(1024), bytearray(1024), bytearray(1024)
    red[3 * 32 + 7], green[3 * 32 + 7], blue[3 * 32 + 7] = 51, 102, 255  # pixel (h=3, w=7)
    red[31 * 32 + 0] = 255  # the red of pixel (h=31, w=0)
    (tmp_path / "test_batch.bin").write_bytes(bytes([6]) + red + green + blue)
    dataset = CIFAR10(tmp_path, train=False)
    image, label = dataset[0]
    assert label == 6 and dataset.classes[label] == "frog"
    np.testing.assert_array_equal(image[:, 3, 7], np.float32([51, 102, 255]) / np.float32(255))
    np.testing.assert_array_equal(image[:, 31, 0], [1, 0, 0])
    assert np.count_nonzero(image) == 4


def test_classes_from_the_meta_file(tmp_path):
    write_cifar10(tmp_path, PER_BATCH, N_TEST)
    names = [f"class-{i}" for i in range(10)]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names) + "\n\n")  # as the real one ends
    dataset = CIFAR10(tmp_path, train=False)
    assert dataset.classes == names
    assert dataset.class_to_idx == {name: i for i, name in enumerate(names)}


def test_standard_classes_without_the_meta_file(tmp_path):
    write_cifar10(tmp_path, PER_BATCH, N_TEST, meta=False)
    assert CIFAR10(tmp_path, train=False).classes == CLASSES


def test_a_meta_file_of_the_wrong_length(tmp_path):
    write_cifar10(tmp_path, PER_BATCH, N_TEST)
    (tmp_path / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match=r"batches.meta.txt: expected the 10 CIFAR-10 class na"):
        CIFAR10(tmp_path, train=False)


def test_gather_and_loader(tmp_path):
    images, labels = write_cifar10(tmp_path, PER_BATCH, N_TEST)[True]
    dataset = CIFAR10(tmp_path)
    batch_images, batch_labels = dataset.gather([0, 25, 99, -1])
    np.testing.assert_array_equal(batch_images, as_nchw(images[[0, 25, 99, 99]]))
    np.testing.assert_array_equal(batch_labels, labels[[0, 25, 99, 99]])
    assert batch_labels.dtype == np.int64
    seen = np.concatenate([y for _, y in DataLoader(dataset, batch_size=32)])
    np.testing.assert_array_equal(seen, labels)


def test_constants_are_torchvisions():
    assert CIFAR10_MEAN == (0.4914, 0.4822, 0.4465)
    assert CIFAR10_STD == (0.2470, 0.2435, 0.2616)


def test_missing_files_say_where_they_were_looked_for(tmp_path):
    expected = (
        rf"data_batch_1.bin not found in '{tmp_path}/cifar-10-batches-bin' nor in '{tmp_path}'"
    )
    with pytest.raises(FileNotFoundError, match=expected + ".*download=True"):
        CIFAR10(tmp_path)
    assert not holds_cifar10(tmp_path)


def test_a_missing_batch_is_named(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-bin", PER_BATCH, N_TEST)
    os.remove(tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin")
    with pytest.raises(FileNotFoundError, match=r"data_batch_3.bin not found in '.*batches-bin'"):
        CIFAR10(tmp_path)
    assert len(CIFAR10(tmp_path, train=False)) == N_TEST  # the test split is all there


@pytest.mark.parametrize("size", [0, 3072, 3073 * 2 - 1, 3073 * 2 + 1])
def test_a_truncated_file_is_named(tmp_path, size):
    write_cifar10(tmp_path, PER_BATCH, N_TEST)
    with open(tmp_path / "data_batch_2.bin", "r+b") as file:
        file.truncate(size)
    with pytest.raises(ValueError, match=rf"data_batch_2.bin: {size} bytes is not a whole numb"):
        CIFAR10(tmp_path)


def test_a_label_above_9_is_named(tmp_path):
    write_cifar10(tmp_path, PER_BATCH, N_TEST)
    raw = bytearray((tmp_path / "test_batch.bin").read_bytes())
    raw[3 * 3073] = 10  # the label byte of record 3
    (tmp_path / "test_batch.bin").write_bytes(raw)
    with pytest.raises(ValueError, match=r"test_batch.bin: record 3 has label 10, but CIFAR-10"):
        CIFAR10(tmp_path, train=False)


def test_flags_and_timeout_are_checked(tmp_path):
    with pytest.raises(TypeError, match="^CIFAR10: train must be True or False, got 'test'"):
        CIFAR10(tmp_path, train="test")
    with pytest.raises(TypeError, match="^CIFAR10: download must be True or False, got 1"):
        CIFAR10(tmp_path, download=1)
    with pytest.raises(ValueError, match="CIFAR10: timeout"):
        CIFAR10(tmp_path, timeout=0)


def test_repr(tmp_path):
    write_cifar10(tmp_path, PER_BATCH, N_TEST)
    assert (
        repr(CIFAR10(tmp_path, train=False))
        == f"CIFAR10(root={str(tmp_path)!r}, split=test, size=10)"
    )


# ------------------------------------------------------------------------- download


def _add(archive, name, data=b"", kind=tarfile.REGTYPE, link=""):
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.size = kind, link, len(data)
    archive.addfile(member, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_archive(path, extra=()):
    """A cifar-10-binary.tar.gz laid out as the real one; ``extra`` members are added last."""
    source = path.parent / "source"
    written = write_cifar10(source, PER_BATCH, N_TEST)
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, "cifar-10-batches-bin", kind=tarfile.DIRTYPE)
        for name in [*TRAIN_FILES, "test_batch.bin", "batches.meta.txt"]:
            _add(archive, f"cifar-10-batches-bin/{name}", (source / name).read_bytes())
        for member in extra:
            _add(archive, **member)
    return path.as_uri(), hashlib.md5(path.read_bytes()).hexdigest(), written


def test_download_from_a_local_archive(tmp_path):
    url, md5, written = make_archive(tmp_path / "cifar-10-binary.tar.gz")
    root = tmp_path / "data"
    dataset = CIFAR10(root, download=True, url=url, md5=md5)
    np.testing.assert_array_equal(dataset.labels, written[True][1])
    np.testing.assert_array_equal(dataset.images, as_nchw(written[True][0]))
    assert sorted(os.listdir(root)) == ["cifar-10-batches-bin"]
    assert len(os.listdir(root / "cifar-10-batches-bin")) == 7
    # Present now: the next download=True reads them without fetching anything.
    assert len(CIFAR10(root, train=False, download=True, url="file:///no/such.tar.gz")) == N_TEST


def test_a_wrong_md5_writes_nothing(tmp_path):
    url, _, _ = make_archive(tmp_path / "cifar-10-binary.tar.gz")
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"MD5 mismatch, expected 0{32}, got [0-9a-f]{32}"):
        CIFAR10(root, download=True, url=url, md5="0" * 32)
    assert not root.exists()


def test_an_unreachable_url(tmp_path):
    with pytest.raises(DownloadError, match=r"could not download file:///no/such.tar.gz: "):
        CIFAR10(tmp_path, download=True, url="file:///no/such.tar.gz")


@pytest.mark.parametrize(
    "member",
    [
        {"name": "../evil.bin", "data": b"x"},
        {"name": "cifar-10-batches-bin/../../evil.bin", "data": b"x"},
        {"name": "/tmp/evil.bin", "data": b"x"},
        {"name": "cifar-10-batches-bin/sub/evil.bin", "data": b"x"},
        {"name": "cifar-10-batches-bin\\..\\evil.bin", "data": b"x"},
        {"name": "cifar-10-batches-bin/link", "kind": tarfile.SYMTYPE, "link": "/etc/passwd"},
        {"name": "cifar-10-batches-bin/hard", "kind": tarfile.LNKTYPE, "link": "/etc/passwd"},
        {"name": "cifar-10-batches-bin/sub", "kind": tarfile.DIRTYPE},
    ],
)
def test_an_unsafe_archive_is_refused_before_writing(tmp_path, member):
    url, md5, _ = make_archive(tmp_path / "cifar-10-binary.tar.gz", extra=[member])
    root = tmp_path / "data"
    with pytest.raises(ValueError, match=r"refusing to extract member .*no links, no other"):
        CIFAR10(root, download=True, url=url, md5=md5)
    assert not root.exists() and not (tmp_path / "evil.bin").exists()


def test_a_download_that_is_no_archive(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    path.write_bytes(b"<html>not found</html>")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=r"cifar-10-binary.tar.gz: not a valid .tar.gz archive"):
        CIFAR10(tmp_path / "data", download=True, url=path.as_uri(), md5=md5)


def test_python_pickles_are_never_read(tmp_path):
    # The Python version's batches (data_batch_1 without .bin) are not CIFAR10's files.
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04not read")
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin not found"):
        CIFAR10(tmp_path)
