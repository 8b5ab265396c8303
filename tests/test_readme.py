"""The README's code runs as written."""

import math
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    if not README.exists():  # tests run from an installed wheel, outside the checkout
        pytest.skip("README.md is not beside the tests")
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_lenet_example_trains(capsys):
    (example,) = [block for block in python_blocks() if "loss after 30 steps" in block]
    assert len(example.strip().splitlines()) <= 20
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "training loss after 30 steps" in printed
    # ten classes at random start near ln(10); thirty steps on one batch must learn it
    assert namespace["loss"] < 0.5 * math.log(10)


def test_training_example_runs(tmp_path, monkeypatch, capsys):
    (example,) = [block for block in python_blocks() if "train.fit" in block]
    monkeypatch.chdir(tmp_path)  # it writes lenet5.npz and lenet5.png
    exec(compile(example, str(README), "exec"), {})
    printed = capsys.readouterr().out
    accuracy = float(printed.split("after one epoch: ")[1].split("%")[0])
    assert accuracy > 80  # one epoch on 6,000 real digits; chance is 10%
    assert (tmp_path / "lenet5.npz").stat().st_size > 0
    assert (tmp_path / "lenet5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_callbacks_example_runs(tmp_path, monkeypatch, capsys):
    (example,) = [block for block in python_blocks() if "EarlyStopping(" in block]
    monkeypatch.chdir(tmp_path)  # it writes run.npz and best.npz
    exec(compile(example, str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert "lowest test error" in printed and (tmp_path / "best.npz").stat().st_size > 0


def test_summary_example_runs(capsys):
    (example,) = [block for block in python_blocks() if "fastcnn.summary(" in block]
    exec(compile(example, str(README), "exec"), {})
    printed = capsys.readouterr().out
    shown = re.search(r"```text\n(=+\nLayer \(type\).*?)```", README.read_text(), re.S)[1]
    kept = [line for line in shown.splitlines() if line.strip() != "..."]
    assert all(line in printed.splitlines() for line in kept)  # the README shows the output


@pytest.mark.parametrize(
    "marker",
    [
        "nn.Residual(nn.Sequential",
        "with fastcnn.no_grad():",
        "label_smoothing=0.1",
        "RandomAffine(10",
    ],
)
def test_residual_and_inference_examples_run(marker):
    (example,) = [block for block in python_blocks() if marker in block]
    exec(compile(example, str(README), "exec"), {})


def test_one_cycle_example_runs(capsys):
    (example,) = [block for block in python_blocks() if "OneCycleLR(" in block]
    exec(compile(example, str(README), "exec"), {})
    printed = capsys.readouterr().out
    # 0.1 / 25 at the start; at step 8 of 16, well past the peak at step 3.8, on the way down
    assert "lr at the start of each epoch: [0.004, 0.0691]" in printed
