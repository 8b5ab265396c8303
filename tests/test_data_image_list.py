"""ImageListDataset on small PNG files generated here."""

import sys

import numpy as np
import pytest

from fastcnn.data import ImageListDataset

Image = pytest.importorskip("PIL.Image")


def _make_images(root, count=4, size=(10, 12), seed=0):
    """``count`` RGB PNGs of ``size`` (h, w) under root/imgs; returns (relative paths, arrays)."""
    rng = np.random.default_rng(seed)
    (root / "imgs").mkdir(exist_ok=True)
    paths, arrays = [], []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        relative = f"imgs/digit {i}.png"  # a space in the name: the label is the last field
        Image.fromarray(pixels, "RGB").save(root / relative)
        paths.append(relative)
        arrays.append(pixels)
    return paths, arrays


def _write_list(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_rgb_at_native_size(tmp_path):
    paths, arrays = _make_images(tmp_path)
    labels = [3, 0, 2, 1]
    lines = ["# a comment", ""] + [f"{p} {lab}" for p, lab in zip(paths, labels, strict=True)]
    list_file = _write_list(tmp_path / "train.txt", lines)
    dataset = ImageListDataset(list_file, size=(10, 12), mode="RGB")
    assert dataset.images.shape == (4, 3, 10, 12) and dataset.images.dtype == np.float32
    np.testing.assert_array_equal(dataset.labels, labels)
    expected = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.testing.assert_allclose(dataset.images, expected, rtol=0, atol=1e-7)
    assert dataset.num_classes == 4


def test_grayscale_and_resize_match_pillow(tmp_path):
    paths, _ = _make_images(tmp_path)
    list_file = _write_list(tmp_path / "l.txt", [f"{p} 1" for p in paths])
    dataset = ImageListDataset(list_file, size=(28, 28), mode="L", num_classes=10)
    assert dataset.images.shape == (4, 1, 28, 28)
    with Image.open(tmp_path / paths[2]) as image:
        gray = image.convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    np.testing.assert_allclose(dataset.images[2, 0], np.asarray(gray, np.float32) / 255, atol=1e-7)


def test_root_overrides_list_directory(tmp_path):
    paths, _ = _make_images(tmp_path)
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    list_file = _write_list(elsewhere / "l.txt", [f"{paths[0]} 0"])
    assert len(ImageListDataset(list_file, root=tmp_path)) == 1
    with pytest.raises(FileNotFoundError, match=r"l.txt, line 1: image file .*digit 0.png"):
        ImageListDataset(list_file)


@pytest.mark.parametrize(
    "line, message",
    [
        ("imgs/digit 0.png", r"line 3: expected 'relative/path label'"),
        ("imgs/a.png seven", r"line 3: expected 'relative/path label' .*'imgs/a.png seven'"),
    ],
)
def test_malformed_line_reports_line_number(tmp_path, line, message):
    paths, _ = _make_images(tmp_path)
    list_file = _write_list(tmp_path / "l.txt", [f"{paths[0]} 0", f"{paths[1]} 1", line])
    with pytest.raises(ValueError, match=message):
        ImageListDataset(list_file)


def test_empty_list(tmp_path):
    list_file = _write_list(tmp_path / "l.txt", ["# nothing"])
    with pytest.raises(ValueError, match=r"l.txt: no 'relative/path label' lines found"):
        ImageListDataset(list_file)


def test_unreadable_image_names_the_file(tmp_path):
    paths, _ = _make_images(tmp_path, count=2)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"this is not a PNG")
    list_file = _write_list(tmp_path / "l.txt", [f"{paths[0]} 0", "imgs/broken.png 1"])
    with pytest.raises(ValueError, match=r"l.txt, line 2: cannot read image .*broken.png"):
        ImageListDataset(list_file)


@pytest.mark.parametrize("label", [-1, 10])
def test_label_out_of_range(tmp_path, label):
    paths, _ = _make_images(tmp_path, count=2)
    list_file = _write_list(tmp_path / "l.txt", [f"{paths[0]} 0", f"{paths[1]} {label}"])
    with pytest.raises(ValueError, match=rf"line 2: label {label} is outside \[0, 10\)"):
        ImageListDataset(list_file, num_classes=10)


def test_bad_mode_and_size(tmp_path):
    list_file = _write_list(tmp_path / "l.txt", ["a.png 0"])
    with pytest.raises(ValueError, match="mode must be 'L' or 'RGB', got 'CMYK'"):
        ImageListDataset(list_file, mode="CMYK")
    with pytest.raises(ValueError, match=r"size must be \(height, width\) > 0, got \(0, 28\)"):
        ImageListDataset(list_file, size=(0, 28))
    with pytest.raises(TypeError, match=r"size must be \(height, width\), a pair of ints"):
        ImageListDataset(list_file, size=(28.0, 28))
    with pytest.raises(TypeError, match=r"size must be \(height, width\), a pair of ints"):
        ImageListDataset(list_file, size=(True, 28))
    with pytest.raises(ValueError, match="^ImageListDataset: num_classes must be >= 1, got 0"):
        ImageListDataset(list_file, num_classes=0)


def test_without_pillow_says_how_to_install(tmp_path, monkeypatch):
    paths, _ = _make_images(tmp_path, count=1)
    list_file = _write_list(tmp_path / "l.txt", [f"{paths[0]} 0"])
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    with pytest.raises(ImportError, match=r"decodes images with Pillow.*fastcnn\[images\]"):
        ImageListDataset(list_file)
