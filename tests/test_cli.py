"""The fastcnn command, run as ``python -m fastcnn`` in a subprocess with tiny settings."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cifar_files import write_cifar10

import fastcnn
from fastcnn import cli

# Small and single-threaded, so that each run takes a few seconds.
TINY = ["--limit", "200", "--epochs", "1", "--batch-size", "50", "--threads", "1"]


def run_cli(*args, cwd=None, timeout=120):
    """``python -m fastcnn ARGS`` importing the fastcnn under test; returns CompletedProcess."""
    package_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    env = dict(os.environ, PYTHONPATH=package_parent)
    return subprocess.run(
        [sys.executable, "-m", "fastcnn", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False,
    )  # fmt: skip


def assert_one_line_error(result, pattern):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run shared by the tests that need its output."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_cli("train", *TINY, "--out", out, "--no-progress", "--summary")
    return out, result


def test_train_writes_checkpoint_history_and_plot(trained):
    out, result = trained
    assert result.returncode == 0, result.stderr
    assert (
        "training LeNet5 on the embedded MNIST subset: 200 training and 200 test" in result.stdout
    )
    assert "test top-1: " in result.stdout and "top-5: " in result.stdout
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == 1 and 0 <= history["epochs"][0]["val_accuracy"] <= 1
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"
    state = fastcnn.load(out / "checkpoint.npz")
    assert state["epoch"] == 1 and state["extra"]["config"]["model"] == "lenet5"
    assert state["extra"]["config"]["augment"] is False
    settings = json.loads(state["extra"]["settings"])
    assert settings["limit"] == 200 and settings["lr"] == 0.05 and settings["rgb"] is False
    # --summary: the table, before training starts
    assert result.stdout.index("Total params: 61,706") < result.stdout.index("training LeNet5")
    assert f"wrote {out / 'checkpoint.npz'}, {out / 'best.npz'}, " in result.stdout


def test_summary_of_a_checkpoint(trained):
    out, _ = trained
    result = run_cli("summary", out / "best.npz")
    assert result.returncode == 0, result.stderr
    assert "  conv1 (Conv2d)" in result.stdout and "Total mult-adds: 416,520" in result.stdout


def test_eval_reports_the_same_accuracy(trained):
    out, train_result = trained
    result = run_cli("eval", out / "checkpoint.npz", "--limit", "200", "--threads", "1")
    assert result.returncode == 0, result.stderr
    final_line = [line for line in train_result.stdout.splitlines() if "top-1" in line][0]
    assert final_line in result.stdout  # the same 200 test images, the same numbers
    best = run_cli("eval", out / "best.npz", "--limit", "200", "--threads", "1")
    assert best.returncode == 0, best.stderr
    assert final_line in best.stdout  # one epoch: the best is the last


def test_resume_continues_the_run_with_its_settings(tmp_path):
    out = tmp_path / "out"
    settings = ["--optimizer", "adam", "--lr", "0.001", "--schedule", "none", "--seed", "3"]
    result = run_cli("train", *TINY, *settings, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    # Nothing repeated but --out; --epochs may extend a run without a schedule.
    result = run_cli("train", "--resume", "--out", out, "--epochs", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "200 training and 200 test images, 2 epochs, batch 50, adam lr 0.001 (none" in (
        result.stdout
    )
    history = json.loads((out / "history.json").read_text())
    assert [record["epoch"] for record in history["epochs"]] == [1, 2]
    result = run_cli("train", "--resume", "--out", out, "--lr", "0.01", "--limit", "200")
    expected = r"--lr 0.01 contradicts the resumed run's --lr 0.001, saved in its checkpoint; "
    assert_one_line_error(result, "^fastcnn train: error: --resume: " + expected + "leave out")


def test_every_train_flag_is_a_setting_unless_per_invocation():
    args = vars(cli.make_parser().parse_args(["train"]))
    settings = set(args["deferred_defaults"])
    assert settings.isdisjoint(cli.PER_INVOCATION) and {"lr", "model", "limit"} <= settings
    assert set(args) == settings | set(cli.PER_INVOCATION) | {"run", "command", "deferred_defaults"}
    assert all(args[name] is None for name in settings)  # defaults come after parsing


def test_resume_refuses_changed_settings(trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "checkpoint.npz").write_bytes((out / "checkpoint.npz").read_bytes())
    result = run_cli("train", "--resume", "--out", copy, "--epochs", "2")
    assert_one_line_error(result, r"--epochs 2 contradicts the resumed run's --epochs 1, saved "
                          r"in its checkpoint \(its cosine schedule is planned for 1 epochs; "
                          r"only a run with --schedule none can be extended\)")  # fmt: skip
    result = run_cli("train", "--resume", "--out", copy, "--rgb")
    assert_one_line_error(result, r"--rgb contradicts the resumed run's no --rgb")
    result = run_cli("train", "--resume", "--out", copy, "--classes", "0-4")
    assert_one_line_error(result, r"--classes 0,1,2,3,4 contradicts the resumed run's no --cla")


def test_label_smoothing_is_used_saved_and_reused_by_eval(tmp_path):
    out = tmp_path / "out"
    result = run_cli("train", *TINY, "--label-smoothing", "0.2", "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    state = fastcnn.load(out / "checkpoint.npz")
    assert state["extra"]["config"]["label_smoothing"] == 0.2
    evaluated = run_cli("eval", out / "checkpoint.npz", "--limit", "200", "--threads", "1")
    assert evaluated.returncode == 0, evaluated.stderr
    final_line = [line for line in result.stdout.splitlines() if "top-1" in line][0]
    assert final_line in evaluated.stdout  # the smoothed loss, as in training


def test_augment_trains_and_is_saved_with_the_settings(tmp_path):
    result = run_cli("train", *TINY, "--augment", "--out", tmp_path / "o", "--no-progress")
    assert result.returncode == 0, result.stderr
    config = fastcnn.load(tmp_path / "o" / "checkpoint.npz")["extra"]["config"]
    assert config["augment"] is True
    mnist = cli.augmentation({"in_channels": 1, "image_size": 28})
    assert (mnist.degrees, mnist.translate) == ((-10.0, 10.0), (0.1, 0.1))
    crop, flip = cli.augmentation({"in_channels": 3, "image_size": 32}).transforms
    assert (crop.size, crop.padding, flip.p) == ((32, 32), (4, 4, 4, 4), 0.5)


def test_train_with_one_cycle_rmsprop_and_clipping(tmp_path):
    out = tmp_path / "out"
    options = ["--schedule", "onecycle", "--optimizer", "rmsprop", "--lr", "0.01"]
    result = run_cli("train", *TINY, *options, "--clip-grad", "1.0", "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "rmsprop lr 0.01 (onecycle schedule, gradients clipped to norm 1.0)" in result.stdout
    state = fastcnn.load(out / "checkpoint.npz")
    assert state["scheduler"]["total_steps"] == state["scheduler"]["last_epoch"] == 4  # 200 / 50
    settings = json.loads(state["extra"]["settings"])
    assert {k: settings[k] for k in ("optimizer", "lr", "schedule", "clip_grad", "epochs")} == {
        "optimizer": "rmsprop",
        "lr": 0.01,
        "schedule": "onecycle",
        "clip_grad": 1.0,
        "epochs": 1,
    }
    # The cycle spans the original run's epochs: resuming for more is a one-line error.
    result = run_cli("train", "--epochs", "2", "--threads", "1", "--out", out, "--resume")
    assert_one_line_error(result, r"--epochs 2 contradicts the resumed run's --epochs 1")


@pytest.mark.parametrize(
    "schedule, expected",
    [("cosine", "CosineAnnealingLR"), ("step", "StepLR"), ("multistep", "MultiStepLR"),
     ("onecycle", "OneCycleLR"), ("plateau", "ReduceLROnPlateau"), ("none", "NoneType")],
)  # fmt: skip
def test_schedule_choices_build_their_scheduler(schedule, expected):
    args = cli.make_parser().parse_args(["train", "--schedule", schedule, "--epochs", "8"])
    cli._fill_settings(args, {})  # the defaults of the flags not given
    optimizer = fastcnn.optim.SGD([fastcnn.nn.Parameter(np.ones(2))], lr=args.lr, momentum=0.9)
    scheduler = cli._scheduler(args, optimizer, 10)
    assert type(scheduler).__name__ == expected
    if schedule == "multistep":
        assert sorted(scheduler.milestones) == [4, 6]
    if schedule == "onecycle":
        assert scheduler.total_steps == 80 and optimizer.param_groups[0]["max_lr"] == args.lr


def test_progress_output(tmp_path):
    result = run_cli("train", *TINY, "--log-every", "2", "--out", tmp_path / "o", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1: train loss" in result.stdout  # the per-epoch summary
    assert "epoch 1/1" in result.stderr  # the tqdm bar (stderr), or text lines otherwise


def test_image_list_training_and_eval(tmp_path):
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(40):
        label = i % 4
        pixels = np.zeros((20, 20), np.uint8)
        pixels[label * 5 : label * 5 + 5] = 255  # a bar whose position is the class
        pixels = np.clip(pixels + rng.integers(0, 40, pixels.shape), 0, 255).astype(np.uint8)
        image.fromarray(pixels, "L").save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png {label}")
    (tmp_path / "list.txt").write_text("\n".join(lines))
    common = ["--image-list", tmp_path / "list.txt", "--threads", "1"]
    result = run_cli(
        "train", *common, "--image-size", "16", "--model", "simple", "--epochs", "2",
        "--batch-size", "8", "--out", tmp_path / "out", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "36 training and 4 test images" in result.stdout
    # eval reads the images at the size the model was trained on (16), not the default 28.
    result = run_cli("eval", tmp_path / "out" / "checkpoint.npz", *common)
    assert result.returncode == 0, result.stderr
    assert "SimpleConvNet" in result.stdout and "40 test images" in result.stdout
    # The embedded MNIST images (28x28) are not what this model takes.
    result = run_cli("eval", tmp_path / "out" / "checkpoint.npz", "--threads", "1")
    assert_one_line_error(result, r"a model of 1x16x16 images, but the --data images are 1x28x28")
    result = run_cli("train", *common, "--image-size", "16", "--out", tmp_path / "lenet")
    assert_one_line_error(result, r"--model lenet5: LeNet5: input_size must be 28 or 32, got 16")


def test_cifar10_training_and_eval(tmp_path):
    write_cifar10(tmp_path / "data" / "cifar-10-batches-bin", per_batch=20, n_test=10)
    data_args = ["--data", tmp_path / "data", "--threads", "1"]
    result = run_cli(
        "train", *data_args, "--limit", "40", "--epochs", "1", "--batch-size", "20",
        "--out", tmp_path / "out", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"training LeNet5 on the CIFAR10 in {tmp_path / 'data'}: 40 training and 10 test" in (
        result.stdout
    )
    config = fastcnn.load(tmp_path / "out" / "checkpoint.npz")["extra"]["config"]
    assert (config["in_channels"], config["image_size"], config["num_classes"]) == (3, 32, 10)
    mean, std = fastcnn.data.CIFAR10_MEAN, fastcnn.data.CIFAR10_STD
    assert config["normalize"] == [list(mean), list(std)]  # torchvision's, not the 40 images'
    # eval rebuilds the 3-channel 32x32 LeNet-5 and reads the same 10 test images.
    evaluated = run_cli("eval", tmp_path / "out" / "checkpoint.npz", *data_args)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "on 10 test images of the CIFAR10 in" in evaluated.stdout
    final_line = [line for line in result.stdout.splitlines() if "top-1" in line][0]
    assert final_line in evaluated.stdout
    result = run_cli("eval", tmp_path / "out" / "checkpoint.npz", "--threads", "1")
    assert_one_line_error(result, r"a model of 3x32x32 images, but the --data images are 1x28x28")
    for model in ("improved-lenet5", "resnet20", "mobilenet"):  # all take 3x32x32 images
        out = tmp_path / model
        result = run_cli(
            "train", *data_args, "--model", model, "--limit", "20", "--epochs", "1",
            "--batch-size", "10", "--out", out, "--no-progress",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        evaluated = run_cli("eval", out / "checkpoint.npz", *data_args)
        assert evaluated.returncode == 0, evaluated.stderr


def test_cifar10_data_errors(tmp_path):
    out = ["--out", tmp_path / "out"]
    result = run_cli("train", *TINY, "--data", tmp_path, "--dataset", "cifar10", *out)
    assert_one_line_error(result, r"CIFAR-10 file data_batch_1.bin not found in '.*batches-bin'"
                          r".*; pass --download to fetch it, or point --data at the")  # fmt: skip
    write_cifar10(tmp_path, per_batch=20, n_test=10)
    result = run_cli("train", *TINY, "--data", tmp_path, "--dataset", "mnist", *out)
    assert_one_line_error(result, r"MNIST file train-images-idx3-ubyte.gz .* not found in")
    with open(tmp_path / "data_batch_4.bin", "r+b") as file:
        file.truncate(3073 * 5 - 10)
    result = run_cli("train", *TINY, "--data", tmp_path, *out)
    assert_one_line_error(result, r"data_batch_4.bin: 15355 bytes is not a whole number of 3073")


def test_malformed_image_list(tmp_path):
    (tmp_path / "list.txt").write_text("a.png 0\nb.png\n")
    result = run_cli("train", *TINY, "--image-list", tmp_path / "list.txt", "--out", tmp_path)
    assert_one_line_error(result, r"list.txt, line 2: expected 'relative/path label'")
    (tmp_path / "list.txt").write_text("a.png 0\nb.png -1\n")
    result = run_cli("train", *TINY, "--image-list", tmp_path / "list.txt", "--out", tmp_path)
    assert_one_line_error(result, r"line 2: label -1 is outside \[0, 1\); labels must be 0 or m")


def test_info():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    assert fastcnn.__version__ in result.stdout


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["train", "--epochs", "0"], r"argument --epochs: expected a positive integer, got '0'"),
        (["train", "--lr", "-1"], r"argument --lr: expected a finite number >= 0, got '-1'"),
        (["train", "--model", "vgg"], r"argument --model: invalid choice: 'vgg'"),
        (["train", "--classes", "a-b"], r"expected class labels such as 0-4"),
        (["train", "--data", "/no/such/dir"], r"'/no/such/dir' is neither 'embedded' nor an"),
        (["train", "--dataset", "cifar10"], r"--dataset cifar10 needs --data DIR: the embedded"),
        (["train", "--dataset", "mnist", "--image-list", "l.txt"], r"--dataset mnist is for --d"),
        (["train", "--dataset", "svhn"], r"argument --dataset: invalid choice: 'svhn'"),
        (["eval", "/no/such/checkpoint.npz"], r"checkpoint '/no/such/checkpoint.npz' does not"),
        (["fly"], r"invalid choice: 'fly'"),
        (["train", "--seed", "-1"], r"argument --seed: expected an integer >= 0, got '-1'"),
        (
            ["train", "--label-smoothing", "1.5"],
            r"argument --label-smoothing: expected a number in \[0, 1\], got '1.5'",
        ),
        (["train", "--label-smoothing", "x"], r"argument --label-smoothing: expected a number"),
        (["train", "--resume", "--out", "new"], r"--resume: there is no checkpoint '.*new/ch"),
        (["export", "/no/such/c.npz", "--onnx", "m.onnx"], r"checkpoint '/no/such/c.npz' does not"),
        (["export", "c.npz"], r"the following arguments are required: --onnx"),
        (["train", "--clip-grad", "0"], r"argument --clip-grad: expected a number > 0, got '0'"),
        (["train", "--schedule", "cyclic"], r"argument --schedule: invalid choice: 'cyclic'"),
        (["train", "--optimizer", "lbfgs"], r"argument --optimizer: invalid choice: 'lbfgs'"),
        (["summary", "/no/such/c.npz"], r"checkpoint '/no/such/c.npz' does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, pattern, tmp_path):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), pattern)


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("train", *TINY, "--out", blocker / "run")
    assert_one_line_error(result, r"cannot write to --out '.*a-file/run'")


def test_missing_mnist_files(tmp_path):
    result = run_cli("train", *TINY, "--data", tmp_path, "--out", tmp_path / "out")
    assert_one_line_error(result, r"train-images-idx3-ubyte.gz .* not found in .*; pass "
                          r"--download to fetch it, or point --data at the directory")  # fmt: skip


def test_advice_is_translated_into_flags():
    # Each phrase still occurs in fastcnn.data (or the table would silently rot) ...
    modules = (fastcnn.data.mnist, fastcnn.data.cifar, fastcnn.data.image_list)
    sources = "".join(Path(module.__file__).read_text(encoding="utf-8") for module in modules)
    for python, flags in cli.IN_FLAGS:
        assert python in sources, python
        assert cli.in_flags(f"x; {python} y") == f"x; {flags} y"


@pytest.mark.parametrize("command", [["eval"], ["export", "--onnx", "m.onnx"]])
def test_damaged_checkpoint(tmp_path, command):
    damaged = tmp_path / "checkpoint.npz"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    result = run_cli(*command, damaged, cwd=tmp_path)
    assert_one_line_error(result, r"cannot load checkpoint .*checkpoint.npz")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("command", [["eval"], ["export", "--onnx", "m.onnx"]])
def test_a_checkpoint_path_that_cannot_be_one(tmp_path, command):
    (tmp_path / "run.npz").mkdir()
    result = run_cli(*command, "run.npz", cwd=tmp_path)
    assert_one_line_error(result, r"cannot read checkpoint 'run.npz': Is a directory")
    (tmp_path / "history.json").write_text("{}")
    result = run_cli(*command, "history.json", cwd=tmp_path)
    assert_one_line_error(result, r"'history.json' must end with one of .npz, .safetensors")


def test_export_writes_an_onnx_file_of_the_model(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out, _ = trained
    target = tmp_path / "lenet5.onnx"
    result = run_cli("export", out / "checkpoint.npz", "--onnx", target)
    assert result.returncode == 0, result.stderr
    assert f"wrote {target}: LeNet5 from " in result.stdout
    assert "(batch, 1, 28, 28) images normalised as in training" in result.stdout
    state = fastcnn.train.load_checkpoint(out / "checkpoint.npz")
    model = cli.build_model(state["extra"]["config"])
    fastcnn.train.restore_model(out / "checkpoint.npz", model, state)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model.eval()(x), 1e-4, 1e-4)


def test_export_to_an_unwritable_file(trained, tmp_path):
    pytest.importorskip("onnx")
    out, _ = trained
    result = run_cli("export", out / "checkpoint.npz", "--onnx", tmp_path / "no" / "m.onnx")
    assert_one_line_error(result, r"cannot write --onnx '.*no/m.onnx': No such file")
    result = run_cli("export", out / "checkpoint.npz", "--onnx", tmp_path / "m", "--opset", "9")
    assert_one_line_error(result, r"opset_version must be an int from 13 to \d+")


def test_export_without_onnx_says_what_to_install(trained, tmp_path, monkeypatch, capsys):
    out, _ = trained
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert cli.main(["export", str(out / "checkpoint.npz"), "--onnx", str(tmp_path / "m")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fastcnn export: error: ") and 'pip install "fastcnn[onnx]"' in line


def test_diverging_run_stops_with_advice(tmp_path):
    result = run_cli("train", *TINY, "--lr", "1e6", "--out", tmp_path / "out", "--no-progress")
    assert_one_line_error(result, r"became (nan|inf) at epoch 1, batch \d+.*lower learning rate")


def test_resume_with_another_model_is_refused(trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "checkpoint.npz").write_bytes((out / "checkpoint.npz").read_bytes())
    result = run_cli("train", *TINY, "--model", "simple", "--out", copy, "--resume")
    assert_one_line_error(result, r"--model simple contradicts the resumed run's --model lenet5")


def test_an_internal_error_is_not_a_usage_error(monkeypatch, capsys):
    def broken():
        raise TypeError("an internal bug")

    monkeypatch.setattr(fastcnn, "show_config", broken)
    with pytest.raises(TypeError, match="an internal bug"):  # propagates, so Python prints
        cli.main(["info"])  # its traceback; it is not turned into one line and exit 2
    assert capsys.readouterr().err == ""


def test_an_internal_error_shows_its_traceback():
    code = (
        "import sys, fastcnn, fastcnn.cli\n"
        "def broken():\n"
        "    raise TypeError('an internal bug')\n"
        "fastcnn.show_config = broken\n"
        "sys.exit(fastcnn.cli.main(['info']))\n"
    )
    package_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=package_parent), check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().endswith("TypeError: an internal bug")
    assert "fastcnn info: error" not in result.stderr
