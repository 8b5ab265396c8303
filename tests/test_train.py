"""fit, evaluate, predict, History, checkpoints and resume, on small subsets of real MNIST."""

import json
import sys
from collections import OrderedDict

import numpy as np
import pytest

import fastcnn
from fastcnn import data, models, nn, optim
from fastcnn.train import (
    History,
    IncompatibleCheckpointError,
    NonFiniteLossError,
    evaluate,
    fit,
    load_checkpoint,
    predict,
    topk_correct,
)

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@pytest.fixture(scope="module")
def mnist_small():
    """600 training and 300 test images of the embedded subset, normalised."""
    normalize = data.Normalize(MNIST_MEAN, MNIST_STD)
    train_full, test_full = data.embedded_mnist(True), data.embedded_mnist(False)
    train_set = data.ArrayDataset(normalize(train_full.images[:600]), train_full.labels[:600])
    test_set = data.ArrayDataset(normalize(test_full.images[:300]), test_full.labels[:300])
    return train_set, test_set


def _small_net(seed=0, num_classes=10, width=4):
    """conv 3x3 -> relu -> pool -> dropout -> linear: quick, and with a random generator."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, width, 3, rng=rng)),
                ("act1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("drop", nn.Dropout(0.2, rng=np.random.default_rng(seed + 1))),
                ("fc", nn.Linear(width * 13 * 13, num_classes, rng=rng)),
            ]
        )
    )


def _run(train_set, test_set, epochs, checkpoint=None, resume=False, seed=0, lr=0.05, **kw):
    """Fresh model, optimizer, scheduler and loaders (as a new process would build them)."""
    model = _small_net(seed)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = optim.StepLR(optimizer, step_size=1, gamma=0.5)
    loader = data.DataLoader(train_set, 32, shuffle=True, seed=seed)
    history = fit(
        model, nn.CrossEntropyLoss(), optimizer, loader, data.DataLoader(test_set, 100),
        epochs=epochs, scheduler=scheduler, progress=False, checkpoint=checkpoint,
        resume=resume, **kw,
    )  # fmt: skip
    return model, optimizer, history


def test_fit_learns(mnist_small):
    train_set, test_set = mnist_small
    model = _small_net(width=8)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    loader = data.DataLoader(train_set, 16, shuffle=True, seed=0)
    test_loader = data.DataLoader(test_set, 100)
    before = evaluate(model, test_loader, loss_fn)
    history = fit(
        model, loss_fn, optimizer, loader, test_loader, epochs=6, progress=False, log_every=10
    )  # 6 x 38 = 228 steps
    after = evaluate(model, test_loader, loss_fn)
    # From chance (10%) to well above it, on 600 training images.
    assert before["accuracy"] < 0.2
    assert after["accuracy"] > 0.75 and after["top5"] > 0.9
    assert after["loss"] < before["loss"] / 2
    losses = history["train_loss"]
    assert losses[-1] < losses[0] / 2 and history["train_accuracy"][-1] > 0.75
    assert history["val_accuracy"][-1] == pytest.approx(after["accuracy"])
    assert len(history.running) == 6 * 4  # batches 10, 20, 30 and the last (38) per epoch
    assert history.running[3]["batch"] == 38 and history.running[3]["batches"] == 38


def test_evaluate_runs_in_eval_mode_and_restores_it(mnist_small):
    _, test_set = mnist_small
    model = _small_net()
    loader = data.DataLoader(test_set, 100)
    first = evaluate(model, loader, nn.CrossEntropyLoss())
    again = evaluate(model, loader, nn.CrossEntropyLoss())
    assert first == again  # dropout is off in eval mode: no randomness
    assert model.training and model.drop.training
    model.eval()
    evaluate(model, loader)
    assert not model.training
    assert set(evaluate(model, loader, metrics=["accuracy"])) == {"accuracy"}


def test_predict_matches_eval_forward(mnist_small):
    _, test_set = mnist_small
    model = _small_net()
    logits = predict(model, test_set.images, batch_size=64)
    assert logits.shape == (300, 10) and model.training
    model.eval()
    np.testing.assert_array_equal(logits, model(test_set.images))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\), got shape \(28, 28\)"):
        predict(model, np.zeros((28, 28), np.float32))
    with pytest.raises(ValueError, match="^predict: batch_size must be >= 1, got 0"):
        predict(model, test_set.images, batch_size=0)


def test_topk_correct():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = np.array([2, 0, 0])
    assert topk_correct(logits, labels, 1) == 1
    assert topk_correct(logits, labels, 2) == 2
    assert topk_correct(logits, labels, 5) == 3  # k >= classes: every label is in the top k


def test_history_json_round_trip_and_plot(mnist_small, tmp_path):
    train_set, test_set = mnist_small
    _, _, history = _run(train_set, test_set, epochs=2, log_every=5)
    path = tmp_path / "history.json"
    history.save_json(path)
    loaded = History.load_json(path)
    assert loaded.to_dict() == history.to_dict()
    assert json.loads(path.read_text())["metrics"] == ["accuracy", "top5"]
    assert History.from_dict(history.to_dict()).to_dict() == history.to_dict()
    plot = tmp_path / "history.png"
    history.plot(plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    with pytest.raises(KeyError, match="History has no series 'val_top3'"):
        history["val_top3"]
    with pytest.raises(ValueError, match="nothing to plot yet"):
        History().plot(tmp_path / "empty.png")
    with pytest.raises(ValueError, match="not a History dict"):
        History.from_dict({"epochs": []})


def _state_arrays(model, optimizer):
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        arrays.update({f"opt.{index}.{k}": np.asarray(v) for k, v in state.items()})
    return arrays


def _without_times(history):
    records = history.to_dict()
    for record in records["epochs"]:
        record.pop("seconds")
    return records


def test_resume_is_bit_for_bit(mnist_small, tmp_path):
    train_set, test_set = mnist_small
    straight_model, straight_opt, straight_history = _run(train_set, test_set, epochs=2)
    checkpoint = tmp_path / "run.npz"
    _run(train_set, test_set, epochs=1, checkpoint=checkpoint)
    assert load_checkpoint(checkpoint)["epoch"] == 1
    # Fresh objects, as a new process would build them; the checkpoint restores the rest.
    model, opt, history = _run(train_set, test_set, epochs=2, checkpoint=checkpoint, resume=True)
    expected, actual = _state_arrays(straight_model, straight_opt), _state_arrays(model, opt)
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], value, err_msg=key)
    assert opt.param_groups[0]["lr"] == straight_opt.param_groups[0]["lr"] == 0.0125
    assert _without_times(history) == _without_times(straight_history)
    assert load_checkpoint(checkpoint)["epoch"] == 2


def test_resume_from_another_model_is_refused(mnist_small, tmp_path):
    train_set, test_set = mnist_small
    checkpoint = tmp_path / "run.npz"
    _run(train_set, test_set, epochs=1, checkpoint=checkpoint)
    lenet = models.LeNet5(rng=np.random.default_rng(0))
    optimizer = optim.SGD(lenet.parameters(), lr=0.1)
    loader = data.DataLoader(train_set, 32)
    with pytest.raises(
        IncompatibleCheckpointError,
        match=r"from a model of class Sequential; .* into one of class LeNet5. Build a model of",
    ):
        fit(lenet, nn.CrossEntropyLoss(), optimizer, loader, checkpoint=checkpoint, resume=True)
    wider = _small_net(width=6)
    optimizer = optim.SGD(wider.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"(?s)its model state does not fit: .*size mismatch"):
        fit(wider, nn.CrossEntropyLoss(), optimizer, loader, checkpoint=checkpoint, resume=True)


def test_resume_needs_a_checkpoint(mnist_small, tmp_path):
    train_set, _ = mnist_small
    model = _small_net()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    loader = data.DataLoader(train_set, 32)
    with pytest.raises(ValueError, match="resume=True needs checkpoint=PATH"):
        fit(model, nn.CrossEntropyLoss(), optimizer, loader, resume=True)
    with pytest.raises(FileNotFoundError, match="checkpoint .*missing.npz' does not exist"):
        fit(model, nn.CrossEntropyLoss(), optimizer, loader, checkpoint=tmp_path / "missing.npz",
            resume=True)  # fmt: skip
    fastcnn.save({"weights": model.state_dict()}, tmp_path / "weights.npz")
    with pytest.raises(IncompatibleCheckpointError, match="is not a training checkpoint"):
        load_checkpoint(tmp_path / "weights.npz")


def test_non_finite_loss_stops_and_keeps_last_checkpoint(mnist_small, tmp_path):
    train_set, test_set = mnist_small
    checkpoint = tmp_path / "run.npz"
    model = _small_net()
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # Epoch 1 trains normally; then the learning rate jumps to 5e7 and the loss explodes.
    scheduler = optim.StepLR(optimizer, step_size=1, gamma=1e9)
    loader = data.DataLoader(train_set, 32, shuffle=True, seed=0)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 2, batch \d+: .*lower learning rate"
                       r".*last good checkpoint .*run.npz' is kept") as caught:  # fmt: skip
        fit(model, nn.CrossEntropyLoss(), optimizer, loader, epochs=3, scheduler=scheduler,
            progress=False, checkpoint=checkpoint)  # fmt: skip
    assert caught.value.epoch == 2 and not np.isfinite(caught.value.loss)
    assert isinstance(caught.value, FloatingPointError)
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 1
    assert all(np.isfinite(v).all() for v in state["model"].values())


def test_progress_text_and_silent(mnist_small, capsys):
    train_set, _ = mnist_small
    loader = data.DataLoader(data.Subset(train_set, np.arange(64)), 16)
    model = _small_net()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    fit(model, nn.CrossEntropyLoss(), optimizer, loader, progress=False)
    assert capsys.readouterr() == ("", "")
    fit(model, nn.CrossEntropyLoss(), optimizer, loader, progress="text", log_every=2)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("epoch 1/1 batch 2/4 loss ") and "img/s" in out[0]
    assert out[-1].startswith("epoch 1/1: train loss") and "acc" in out[-1] and "top5" in out[-1]
    pytest.importorskip("tqdm")
    fit(model, nn.CrossEntropyLoss(), optimizer, loader, progress="tqdm", log_every=2)
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err  # the bar
    assert captured.out.startswith("epoch 1/1: train loss")  # the summary line


def test_fit_argument_errors(mnist_small):
    train_set, _ = mnist_small
    model = _small_net()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    loader = data.DataLoader(train_set, 32)
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="unknown metric 'f1'; use 'accuracy'"):
        fit(model, loss_fn, optimizer, loader, metrics=("accuracy", "f1"))
    with pytest.raises(ValueError, match="metrics must not repeat a name"):
        fit(model, loss_fn, optimizer, loader, metrics=("top5", "top5"))
    with pytest.raises(ValueError, match="^fit: epochs must be >= 0, got -1"):
        fit(model, loss_fn, optimizer, loader, epochs=-1)
    with pytest.raises(ValueError, match="^fit: log_every must be >= 1, got 0"):
        fit(model, loss_fn, optimizer, loader, log_every=0)
    with pytest.raises(ValueError, match="^fit: accumulate must be >= 1, got 0"):
        fit(model, loss_fn, optimizer, loader, accumulate=0)
    with pytest.raises(TypeError, match="^fit: epochs must be an int, got str '3'"):
        fit(model, loss_fn, optimizer, loader, epochs="3")
    with pytest.raises(TypeError, match="^fit: log_every must be an int, got bool True"):
        fit(model, loss_fn, optimizer, loader, log_every=True)
    with pytest.raises(TypeError, match="^fit: resume must be True or False, got 'yes'"):
        fit(model, loss_fn, optimizer, loader, resume="yes", checkpoint="run.npz")
    assert len(fit(model, loss_fn, optimizer, loader, epochs=np.int64(0), progress=False)) == 0
    with pytest.raises(ValueError, match="progress must be True, False, 'tqdm' or 'text'"):
        fit(model, loss_fn, optimizer, loader, progress="bar")


def test_fit_evaluate_predict_refuse_wrong_objects_before_any_work(mnist_small):
    train_set, test_set = mnist_small
    model = _small_net()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    loader = data.DataLoader(train_set, 32)
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(TypeError, match="^fit: loss_fn must be a fastcnn.nn.Module .*got function"):
        fit(model, lambda logits, labels: 0.0, optimizer, loader, progress=False)
    with pytest.raises(
        TypeError,
        match="^fit: train_loader must be a DataLoader or a sized iterable of .*got generator",
    ):
        fit(model, loss_fn, optimizer, iter(loader), progress=False)
    with pytest.raises(TypeError, match="^fit: val_loader must be an iterable .*got int"):
        fit(model, loss_fn, optimizer, loader, val_loader=3, progress=False)
    assert loader.epoch == 0  # refused before the first epoch started
    with pytest.raises(
        TypeError,
        match="^fit: val_loader must yield \\(images, labels\\) "
        "pairs, got a batch of type tuple: \\(1, 2, 3\\)",
    ):
        fit(model, loss_fn, optimizer, loader, val_loader=[(1, 2, 3)], progress=False)
    with pytest.raises(TypeError, match="^evaluate: model must be a fastcnn.nn.Module, got str"):
        evaluate("model", loader)
    with pytest.raises(TypeError, match="^evaluate: loader must be an iterable .*got NoneType"):
        evaluate(model, None)
    with pytest.raises(TypeError, match="^evaluate: loader must yield \\(images, labels\\)"):
        evaluate(model, [test_set.images[:4]])
    with pytest.raises(TypeError, match="^predict: model must be a fastcnn.nn.Module, got None"):
        predict(None, test_set.images)


def test_topk_correct_errors():
    logits = np.eye(3)
    with pytest.raises(TypeError, match="^topk_correct: k must be an int, got float 1.5"):
        topk_correct(logits, np.arange(3), 1.5)
    with pytest.raises(ValueError, match="^topk_correct: k must be positive, got -1"):
        topk_correct(logits, np.arange(3), -1)
    with pytest.raises(
        ValueError,
        match=r"labels of shape \(3,\) do not fit logits of shape "
        r"\(3,\); expected logits \(N, C\)",
    ):
        topk_correct(np.ones(3), np.arange(3), 1)
    with pytest.raises(ValueError, match=r"labels of shape \(3, 1\) do not fit logits"):
        topk_correct(logits, np.arange(3)[:, None], 2)


def test_without_tqdm_progress_falls_back_to_text(mnist_small, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    train_set, _ = mnist_small
    loader = data.DataLoader(data.Subset(train_set, np.arange(32)), 16)
    model = _small_net()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    fit(model, nn.CrossEntropyLoss(), optimizer, loader, progress=True, log_every=1)
    out = capsys.readouterr().out
    assert out.startswith("epoch 1/1 batch 1/2 loss") and "epoch 1/1: train loss" in out
    with pytest.raises(ImportError, match=r"pip install fastcnn\[progress\]"):
        fit(model, nn.CrossEntropyLoss(), optimizer, loader, progress="tqdm")


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    history = History()
    history.epochs.append({"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5})
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"History.plot needs matplotlib.*fastcnn\[plot\]"):
        history.plot(tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


class _PoisonedSGD(optim.SGD):
    """SGD whose ``poison_at``-th step leaves an infinite weight (an overflow)."""

    poison_at = 2

    def step(self, closure=None):
        super().step(closure)
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps == self.poison_at:
            self.param_groups[0]["params"][0].data[0] = np.inf


def test_non_finite_weights_are_never_checkpointed(mnist_small, tmp_path):
    train_set, _ = mnist_small
    loader = data.DataLoader(data.Subset(train_set, np.arange(32)), 16)  # 2 batches
    model = _small_net()
    optimizer = _PoisonedSGD(model.parameters(), lr=0.01)
    checkpoint = tmp_path / "run.npz"
    with pytest.raises(NonFiniteLossError, match=r"parameter 'conv1.weight' became non-finite "
                       r"\(NaN or infinity\) at epoch 1, batch 2"):  # fmt: skip
        fit(model, nn.CrossEntropyLoss(), optimizer, loader, progress=False, checkpoint=checkpoint)
    assert not checkpoint.exists()


def test_empty_training_loader(mnist_small):
    train_set, _ = mnist_small
    loader = data.DataLoader(data.Subset(train_set, np.arange(10)), 16, drop_last=True)
    model = _small_net()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match="the training loader yielded no batches"):
        fit(model, nn.CrossEntropyLoss(), optimizer, loader, progress=False)
