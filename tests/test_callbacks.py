"""fit's callbacks (EarlyStopping, ModelCheckpoint, custom ones), eval_every and user metrics,
on a tiny subset of the embedded MNIST images."""

import math
from collections import OrderedDict

import numpy as np
import pytest

from fastcnn import data, nn, optim
from fastcnn.train import (
    Callback,
    EarlyStopping,
    History,
    IncompatibleCheckpointError,
    ModelCheckpoint,
    Run,
    evaluate,
    fit,
    load_checkpoint,
    restore_model,
)


@pytest.fixture(scope="module")
def tiny():
    """128 training and 64 test images, normalised."""
    normalize = data.Normalize(0.1307, 0.3081)
    train_full, test_full = data.embedded_mnist(True), data.embedded_mnist(False)
    train_set = data.ArrayDataset(normalize(train_full.images[:128]), train_full.labels[:128])
    test_set = data.ArrayDataset(normalize(test_full.images[:64]), test_full.labels[:64])
    return train_set, test_set


def _net(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        OrderedDict(
            [
                ("conv", nn.Conv2d(1, 2, 3, stride=2, rng=rng)),
                ("act", nn.ReLU()),
                ("flatten", nn.Flatten()),
                ("drop", nn.Dropout(0.2, rng=np.random.default_rng(seed + 1))),
                ("fc", nn.Linear(2 * 13 * 13, 10, rng=rng)),
            ]
        )
    )


def _fit(tiny, epochs, callbacks=(), checkpoint=None, resume=False, lr=0.05, **kw):
    """A fresh model, optimizer, scheduler and loaders, as a new process would build them."""
    train_set, test_set = tiny
    model = _net()
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = optim.StepLR(optimizer, step_size=2, gamma=0.5)
    loader = data.DataLoader(train_set, 32, shuffle=True, seed=0)
    history = fit(
        model, nn.CrossEntropyLoss(), optimizer, loader, data.DataLoader(test_set, 64),
        epochs=epochs, scheduler=scheduler, progress=False, checkpoint=checkpoint,
        resume=resume, callbacks=list(callbacks), **kw,
    )  # fmt: skip
    return model, history


class _Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, run):
        self.calls.append(("train_begin", run.epoch))

    def on_epoch_begin(self, run, epoch):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, run, batch, logs):
        self.calls.append(("batch_end", batch, sorted(logs)))

    def on_epoch_end(self, run, epoch, logs):
        assert run.history.epochs[-1] is logs  # the record is in the history already
        self.calls.append(("epoch_end", epoch, "val_loss" in logs))

    def on_train_end(self, run):
        self.calls.append(("train_end", run.epoch))


def test_hooks_run_in_order_and_eval_every_skips_validation(tiny, tmp_path):
    recorder = _Recorder()
    _, history = _fit(tiny, epochs=3, callbacks=[recorder], eval_every=2)
    expected = [("train_begin", 0)]
    for epoch, validated in ((1, False), (2, True), (3, True)):  # the last one always is
        expected.append(("epoch_begin", epoch))
        expected += [("batch_end", b, ["accuracy", "loss", "top5"]) for b in range(1, 5)]
        expected.append(("epoch_end", epoch, validated))
    expected.append(("train_end", 3))
    assert recorder.calls == expected
    assert "val_loss" not in history.epochs[0] and "val_top5" in history.epochs[1]
    values = history["val_loss"]
    assert math.isnan(values[0]) and all(math.isfinite(v) for v in values[1:])
    history.plot(tmp_path / "history.png")  # NaN epochs are left out, not an error
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"


def _stepping(values, **options):
    """The epochs at which EarlyStopping, fed ``values`` as val_loss, stops (None if not)."""
    stopper = EarlyStopping(**options)
    run = Run(None, None, None, None, History(), len(values), series={"val_loss"}, extra=None,
              checkpoint=None)  # fmt: skip
    stopper.on_train_begin(run)
    for epoch, value in enumerate(values, start=1):
        stopper.on_epoch_end(run, epoch, {"val_loss": value})
        if run.stop_training:
            return epoch, stopper
    return None, stopper


def test_early_stopping_counts_as_keras_does():
    # patience 0: the first epoch that does not improve stops
    assert _stepping([3.0, 2.0, 2.5])[0] == 3
    # patience 2: two epochs in a row without improvement; an improvement resets the count
    epoch, stopper = _stepping([3.0, 2.9, 3.1, 2.8, 2.9, 2.85, 1.0], patience=2)
    assert epoch == 6 and stopper.best == 2.8 and stopper.best_epoch == 4
    assert stopper.stopped_epoch == 6 and stopper.wait == 2
    # min_delta: an improvement must be larger than it (2.95 is not below 3.0 - 0.1)
    assert _stepping([3.0, 2.95, 2.5], patience=1, min_delta=0.1)[0] == 2
    # mode max; epochs without a value (NaN: not validated) are not counted
    epoch, stopper = _stepping([0.5, math.nan, 0.6, 0.55, 0.6], mode="max", patience=2)
    assert epoch == 5 and stopper.best == 0.6 and stopper.best_epoch == 3
    assert _stepping([1.0, 0.9, 0.8], patience=1)[0] is None


def test_early_stopping_stops_fit_and_survives_an_interruption(tiny, tmp_path):
    # Monitoring the training loss in "max" mode: it falls, so the best stays epoch 1 and
    # patience 2 stops at epoch 3, whatever the numbers.
    def stopper():
        return EarlyStopping(monitor="train_loss", mode="max", patience=2)

    straight, history = _fit(tiny, epochs=10, callbacks=[stopper()])
    assert len(history) == 3

    class Interrupted(Exception):
        pass

    class Interrupt(Callback):  # as a Ctrl-C during epoch 3 (no state: left out on resume)
        def on_epoch_begin(self, run, epoch):
            if epoch == 3:
                raise Interrupted

    checkpoint = tmp_path / "run.npz"
    with pytest.raises(Interrupted):
        _fit(tiny, epochs=10, callbacks=[stopper(), Interrupt()], checkpoint=checkpoint)
    assert load_checkpoint(checkpoint)["epoch"] == 2  # wait is 1 here
    resumed, history = _fit(tiny, 10, [stopper()], checkpoint, resume=True)
    assert len(history) == 3  # not 5, as a stopper that forgot its count would give
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)
    # A finished, stopped run stays stopped on resume: no epoch is trained.
    _, again = _fit(tiny, 10, [stopper()], checkpoint, resume=True)
    assert len(again) == 3 and load_checkpoint(checkpoint)["epoch"] == 3


def test_model_checkpoint_keeps_the_best_epoch(tiny, tmp_path):
    best = tmp_path / "best.npz"
    keeper = ModelCheckpoint(best, monitor="val_accuracy", mode="max")
    checkpoint = tmp_path / "run.npz"
    model, history = _fit(tiny, 3, [keeper], checkpoint, extra={"note": "x"})
    accuracies = history["val_accuracy"]
    best_epoch = int(np.argmax(accuracies)) + 1  # the first of equals: only improvements count
    assert keeper.best_epoch == best_epoch and keeper.best == max(accuracies)
    state = load_checkpoint(best)
    assert state["epoch"] == best_epoch and state["extra"] == {"note": "x"}
    restored = restore_model(best, _net(seed=5))
    assert restored["epoch"] == best_epoch
    # The best value is in fit's checkpoint: a resumed run (fresh keeper) knows it.
    fresh = ModelCheckpoint(best, monitor="val_accuracy", mode="max")
    _fit(tiny, 3, [fresh], checkpoint, resume=True)
    assert (fresh.best, fresh.best_epoch) == (keeper.best, keeper.best_epoch)


def test_resume_with_other_callbacks_is_refused(tiny, tmp_path):
    checkpoint = tmp_path / "run.npz"
    _fit(tiny, 1, [EarlyStopping()], checkpoint)
    with pytest.raises(IncompatibleCheckpointError, match=r"callbacks \['0.EarlyStopping'\] .*"
                       r"with state \[\]; resume with the same callbacks"):  # fmt: skip
        _fit(tiny, 2, [], checkpoint, resume=True)


def error_rate(logits, labels):
    return float(np.mean(logits.argmax(1) != labels))


def test_user_metric_functions(tiny, capsys, tmp_path):
    _, history = _fit(tiny, 1, metrics=["accuracy", error_rate])
    history.plot(tmp_path / "history.png")  # a panel titled error_rate
    record = history.epochs[0]
    assert record["train_error_rate"] == pytest.approx(1 - record["train_accuracy"])
    assert record["val_error_rate"] == pytest.approx(1 - record["val_accuracy"])
    assert history.metrics == ("accuracy", "error_rate")
    train_set, test_set = tiny
    model = _net()
    values = evaluate(model, data.DataLoader(test_set, 24), metrics=[error_rate])
    assert set(values) == {"error_rate"}  # batches of 24, 24, 16: weighted by size
    assert values["error_rate"] == pytest.approx(error_rate(model.eval()(test_set.images),
                                                            test_set.labels))  # fmt: skip
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    loader = data.DataLoader(train_set, 64)
    fit(model, nn.CrossEntropyLoss(), optimizer, loader, metrics=[error_rate], progress="text")
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("epoch 1/1: train loss ") and " error_rate 0." in last


def _fit_quietly(tiny, **kw):
    train_set, _ = tiny
    model = _net()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    loader = data.DataLoader(train_set, 64)
    return fit(model, nn.CrossEntropyLoss(), optimizer, loader, progress=False, **kw)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"callbacks": EarlyStopping()}, TypeError, "^fit: callbacks must be a list of .* got "
         "EarlyStopping; wrap a single callback in a list"),
        ({"callbacks": [print]}, TypeError, "^fit: each of callbacks must be a fastcnn.train."
         "Callback, got builtin_function_or_method"),
        ({"eval_every": 0}, ValueError, "^fit: eval_every must be >= 1, got 0"),
        ({"callbacks": [EarlyStopping()]}, ValueError, r"^EarlyStopping: monitor 'val_loss' is "
         r"not a series .*values need fit\(val_loader=...\)\); choose one of \['lr', 'sec"),
        ({"callbacks": [ModelCheckpoint("run.npz", monitor="train_loss")], "checkpoint":
          "run.npz"}, ValueError, "^ModelCheckpoint: path 'run.npz' is fit's own checkpoint"),
        ({"metrics": [lambda logits, labels: 0.0]}, ValueError, "has name '<lambda>'; use a def"),
        ({"metrics": ["accuracy", 3]}, TypeError, "^metrics: each metric must be a name .* got "
         "int 3"),
    ],
)  # fmt: skip
def test_fit_refuses_bad_callbacks_and_metrics(tiny, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        _fit_quietly(tiny, **kwargs)


def test_bad_metric_values_and_callback_arguments(tiny):
    def named(logits, labels):
        return "high"

    with pytest.raises(TypeError, match="^metric 'named' must return a number .* got str"):
        _fit_quietly(tiny, metrics=[named])
    named.__name__ = "loss"
    with pytest.raises(ValueError, match="may not be named 'loss', a name fit already uses"):
        _fit_quietly(tiny, metrics=[named])
    with pytest.raises(ValueError, match="^EarlyStopping: mode must be 'min' or 'max', got 'up'"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="^EarlyStopping: patience must be >= 0, got -1"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match=r"^EarlyStopping: min_delta must be a number in \[0.0"):
        EarlyStopping(min_delta=-0.1)
    with pytest.raises(TypeError, match="^ModelCheckpoint: path must be a str or os.PathLike"):
        ModelCheckpoint(None)
    with pytest.raises(TypeError, match="^ModelCheckpoint: monitor must be a str"):
        ModelCheckpoint("best.npz", monitor=1)
