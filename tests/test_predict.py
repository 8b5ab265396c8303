"""``fastcnn predict CHECKPOINT IMAGES...`` against the model run directly in eval mode."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import softmax
from test_cli import TINY, assert_one_line_error, run_cli

import fastcnn
from fastcnn import cli, data, train
from fastcnn.data.image_files import load_images

Image = pytest.importorskip("PIL.Image")

LINE = re.compile(r"^(?P<name>.+): (?P<top>\d+ \(\d\.\d{3}\)(, \d+ \(\d\.\d{3}\))*)$")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny LeNet-5 run of ``fastcnn train`` on 28x28 grayscale digits."""
    out = tmp_path_factory.mktemp("run")
    result = run_cli("train", *TINY, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    return out / "checkpoint.npz"


@pytest.fixture(scope="module")
def model_and_config(checkpoint):
    state = train.load_checkpoint(checkpoint)
    model = cli.build_model(state["extra"]["config"])
    train.restore_model(checkpoint, model, state)
    return model.eval(), state["extra"]["config"]


@pytest.fixture(scope="module")
def digits():
    """Six MNIST test digits as uint8 (N, 28, 28), as a PNG of them holds them."""
    images, _ = data.embedded_mnist(train=False).gather(np.arange(6))
    return np.round(images[:, 0] * 255).astype(np.uint8)


def direct_probabilities(model_and_config, images):
    """Softmax of the logits of the model in eval mode on float (N, C, H, W) images in [0, 1]."""
    model, config = model_and_config
    mean, std = config["normalize"]
    x = ((images - mean) / std).astype(np.float32)
    return softmax(model(x).astype(np.float64), axis=1)


def predict(capsys, *args):
    """``fastcnn predict ARGS`` in this process: (exit status, stdout lines, stderr)."""
    status = cli.main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def predict_json(capsys, *args):
    status, lines, err = predict(capsys, *args, "--json")
    assert status == 0, err
    return [json.loads(line) for line in lines]


def assert_top_k(predictions, expected, k):
    """Each prediction holds the k most probable classes of its row of ``expected``, most
    probable first, with their probabilities."""
    assert len(predictions) == len(expected)
    for prediction, probabilities in zip(predictions, expected, strict=True):
        top = prediction["top_k"]
        classes = [entry["class"] for entry in top]
        printed = np.array([entry["probability"] for entry in top])
        assert len(top) == k and len(set(classes)) == k
        np.testing.assert_allclose(printed, probabilities[classes], rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(printed) <= 0)
        others = np.delete(probabilities, classes)
        assert others.size == 0 or printed[-1] >= others.max() - 1e-6


def write_pngs(directory, images, names):
    directory.mkdir(exist_ok=True)
    for pixels, name in zip(images, names, strict=True):
        Image.fromarray(pixels, "L").save(directory / name)
    return [directory / name for name in names]


def test_png_files_match_the_model_in_eval_mode(capsys, checkpoint, model_and_config, digits):
    paths = write_pngs(checkpoint.parent / "pngs", digits, [f"{i}.png" for i in range(6)])
    predictions = predict_json(capsys, checkpoint, *paths)
    assert [p["name"] for p in predictions] == [str(path) for path in paths]
    expected = direct_probabilities(model_and_config, digits[:, None] / np.float32(255))
    assert_top_k(predictions, expected, 3)
    # The human table: the same classes, the probabilities to three decimals.
    status, lines, _ = predict(capsys, checkpoint, *paths)
    assert status == 0
    for line, prediction in zip(lines, predictions, strict=True):
        match = LINE.match(line)
        assert match and match["name"] == prediction["name"], line
        shown = ", ".join(f"{e['class']} ({e['probability']:.3f})" for e in prediction["top_k"])
        assert match["top"] == shown


def test_a_directory_gives_its_images_sorted_not_recursively(capsys, checkpoint, digits, tmp_path):
    write_pngs(tmp_path, digits[:3], ["b.png", "a.PNG", "c.bmp"])
    write_pngs(tmp_path / "sub", digits[3:4], ["d.png"])
    (tmp_path / "notes.txt").write_text("not an image")
    names = [p["name"] for p in predict_json(capsys, checkpoint, tmp_path)]
    assert names == [str(tmp_path / name) for name in ("a.PNG", "b.png", "c.bmp")]


@pytest.mark.parametrize("name", ["digits.idx3-ubyte", "t10k-images-idx3-ubyte.gz"])
def test_an_idx_file_gives_every_image(
    capsys, checkpoint, model_and_config, digits, tmp_path, name
):
    data.write_idx(tmp_path / name, digits)
    (png,) = write_pngs(tmp_path, digits[:1], ["first.png"])
    predictions = predict_json(capsys, checkpoint, png, tmp_path / name, "--top-k", "2")
    idx = tmp_path / name
    assert [p["name"] for p in predictions] == [str(png)] + [f"{idx}[{i}]" for i in range(6)]
    images = np.concatenate([digits[:1], digits])[:, None] / np.float32(255)
    assert_top_k(predictions, direct_probabilities(model_and_config, images), 2)


def test_other_sizes_and_colours_are_decoded_as_in_training(
    capsys, checkpoint, model_and_config, digits, tmp_path
):
    big = Image.fromarray(digits[0]).resize((40, 36)).convert("RGB")
    big.save(tmp_path / "big.png")
    (tmp_path / "list.txt").write_text("big.png 0\n")
    as_trained = data.ImageListDataset(tmp_path / "list.txt", size=(28, 28), mode="L").images
    predictions = predict_json(capsys, checkpoint, tmp_path / "big.png", "--top-k", "10")
    assert_top_k(predictions, direct_probabilities(model_and_config, as_trained), 10)
    _, loaded = load_images([tmp_path / "big.png"], (1, 28, 28))
    np.testing.assert_array_equal(loaded, as_trained)


def test_batch_size_does_not_change_the_predictions(capsys, checkpoint, digits, tmp_path):
    data.write_idx(tmp_path / "d.idx3-ubyte", digits)
    one = predict_json(capsys, checkpoint, tmp_path / "d.idx3-ubyte", "--batch-size", "1")
    whole = predict_json(capsys, checkpoint, tmp_path / "d.idx3-ubyte")
    assert [[e["class"] for e in p["top_k"]] for p in one] == [
        [e["class"] for e in p["top_k"]] for p in whole
    ]
    np.testing.assert_allclose(
        [[e["probability"] for e in p["top_k"]] for p in one],
        [[e["probability"] for e in p["top_k"]] for p in whole],
        rtol=1e-5,
    )


def test_extreme_logits_give_clean_probabilities(capsys, checkpoint, digits, tmp_path):
    state = fastcnn.load(checkpoint)
    bias = np.zeros(10, np.float32)
    bias[[1, 3, 4]] = 1e30, 5e29, -1e30  # a naive exp() overflows on each
    state["model"]["fc3.bias"] = bias
    fastcnn.save(state, tmp_path / "extreme.npz")
    (png,) = write_pngs(tmp_path, digits[:1], ["x.png"])
    status, lines, err = predict(capsys, tmp_path / "extreme.npz", png, "--top-k", "4")
    assert status == 0, err
    # Class 1 takes it all; the exact zeros after it tie, and ties list the lower class first.
    assert lines == [f"{png}: 1 (1.000), 0 (0.000), 2 (0.000), 3 (0.000)"]


def test_top_k_bounds(capsys, checkpoint, digits, tmp_path):
    (png,) = write_pngs(tmp_path, digits[:1], ["x.png"])
    (prediction,) = predict_json(capsys, checkpoint, png, "--top-k", "10")
    assert sorted(e["class"] for e in prediction["top_k"]) == list(range(10))
    assert sum(e["probability"] for e in prediction["top_k"]) == pytest.approx(1, abs=1e-5)
    status, lines, err = predict(capsys, checkpoint, png, "--top-k", "11")
    assert status == 2 and lines == []
    assert err.strip() == (
        f"fastcnn predict: error: --top-k 11 is more than the 10 classes of the model in "
        f"'{checkpoint}'; choose 1 to 10"
    )
    result = run_cli("predict", checkpoint, png, "--top-k", "0")
    assert_one_line_error(result, r"argument --top-k: expected a positive integer, got '0'")


def test_the_default_top_k_is_capped_at_the_class_count(capsys, digits, tmp_path):
    args = ["--model", "simple", "--classes", "0-1", "--limit", "100", "--epochs", "1"]
    result = run_cli("train", *args, "--threads", "1", "--out", tmp_path, "--no-progress")
    assert result.returncode == 0, result.stderr
    (png,) = write_pngs(tmp_path, digits[:1], ["x.png"])
    (prediction,) = predict_json(capsys, tmp_path / "checkpoint.npz", png)
    assert sorted(e["class"] for e in prediction["top_k"]) == [0, 1]


@pytest.fixture
def bad_inputs(tmp_path, digits):
    """name -> (path, pattern its one-line error must match)."""
    raw = data.idx.idx_bytes(digits)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    (tmp_path / "short.idx3-ubyte").write_bytes(raw[:-10])
    data.write_idx(tmp_path / "short.idx3-ubyte.gz", digits)
    gz = (tmp_path / "short.idx3-ubyte.gz").read_bytes()
    (tmp_path / "short.idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])
    data.write_idx(tmp_path / "labels-idx1-ubyte", np.arange(6, dtype=np.uint8))
    data.write_idx(tmp_path / "small-idx3-ubyte", digits[:, :16, :16])
    data.write_idx(tmp_path / "float-idx3-ubyte", digits.astype(np.float32))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    return {
        "missing": (tmp_path / "nope.png", r"'.*nope.png' does not exist \(expected an image"),
        "corrupt": (tmp_path / "corrupt.png", r"cannot read image '.*corrupt.png': cannot ident"),
        "truncated": (
            tmp_path / "short.idx3-ubyte",
            r"short.idx3-ubyte: truncated: the header promises shape \(6, 28, 28\)",
        ),
        "truncated gzip": (tmp_path / "short.idx3-ubyte.gz", r"short.idx3-ubyte.gz: the gzip"),
        "labels": (tmp_path / "labels-idx1-ubyte", r"labels-idx1-ubyte: holds 1-D data of shape"),
        "small": (tmp_path / "small-idx3-ubyte", r"holds 1x16x16 images, but the model takes 1x28"),
        "float": (tmp_path / "float-idx3-ubyte", r"float-idx3-ubyte: holds float32 values"),
        "empty directory": (tmp_path / "empty", r"directory '.*empty' has no image files"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "corrupt", "truncated", "truncated gzip", "labels", "small", "float",
     "empty directory"],
)  # fmt: skip
def test_a_bad_image_input_is_one_line_naming_it(capsys, checkpoint, digits, bad_inputs, case):
    (good,) = write_pngs(checkpoint.parent / "good", digits[:1], ["ok.png"])
    path, pattern = bad_inputs[case]
    status, lines, err = predict(capsys, checkpoint, good, path)
    assert status == 2 and lines == []  # nothing printed for the good file either
    (line,) = err.strip().splitlines()
    assert line.startswith("fastcnn predict: error: ") and re.search(pattern, line), line


def test_a_bad_input_exits_2_without_a_traceback(checkpoint, tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a JPEG")
    result = run_cli("predict", checkpoint, tmp_path / "corrupt.jpg", "--threads", "1")
    assert_one_line_error(result, r"cannot read image '.*corrupt.jpg'")


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda p: p.write_text("hello"), r"cannot load checkpoint '.*c.npz': it is not a fastcnn"),
        (lambda p: fastcnn.save({"w": np.zeros(3)}, p), r"'.*c.npz' is not a training checkpoint"),
        (lambda p: None, r"checkpoint '.*c.npz' does not exist"),
    ],
)
def test_a_bad_checkpoint_is_one_line_naming_it(capsys, digits, tmp_path, make, pattern):
    make(tmp_path / "c.npz")
    (png,) = write_pngs(tmp_path, digits[:1], ["x.png"])
    status, lines, err = predict(capsys, tmp_path / "c.npz", png)
    assert status == 2 and lines == []
    (line,) = err.strip().splitlines()
    assert re.search(pattern, line), line


def test_without_pillow_images_need_the_extra_but_idx_does_not(
    capsys, checkpoint, digits, tmp_path, monkeypatch
):
    (png,) = write_pngs(tmp_path, digits[:1], ["x.png"])
    data.write_idx(tmp_path / "d.idx3-ubyte", digits)
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    status, _, err = predict(capsys, checkpoint, png)
    assert status == 2 and "pip install fastcnn[images]" in err
    assert len(predict_json(capsys, checkpoint, tmp_path / "d.idx3-ubyte")) == 6


def test_a_closed_pipe_stops_quietly(checkpoint, digits, tmp_path):
    data.write_idx(tmp_path / "many.idx3-ubyte", np.repeat(digits, 500, axis=0))
    package_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    process = subprocess.Popen(
        [sys.executable, "-m", "fastcnn", "predict", str(checkpoint),
         str(tmp_path / "many.idx3-ubyte"), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=package_parent),
    )  # fmt: skip
    assert process.stdout.readline().startswith(f"{tmp_path / 'many.idx3-ubyte'}[0]: ")
    process.stdout.close()  # as `| head -1` does: 3,000 lines will not fit in the pipe
    assert process.wait(timeout=120) == 1
    assert process.stderr.read() == ""
    process.stderr.close()
