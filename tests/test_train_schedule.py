"""fit with schedulers and clipping: per-batch vs per-epoch stepping, ReduceLROnPlateau's
metric, clip_grad_norm, and resume continuing the lr sequence exactly."""

import numpy as np
import pytest

from fastcnn import data, nn, optim
from fastcnn.nn.utils import clip_grad_norm_
from fastcnn.train import IncompatibleCheckpointError, fit

EPOCHS = 3


@pytest.fixture(scope="module")
def datasets():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((56, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 56)
    return data.ArrayDataset(images[:40], labels[:40]), data.ArrayDataset(images[40:], labels[40:])


def tiny_model():
    rng = np.random.default_rng(1)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, rng=rng), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3, rng=rng)
    )


def loader(dataset):
    return data.DataLoader(dataset, 8, shuffle=True, seed=2)  # 5 batches of the 40 images


SCHEDULERS = {
    "onecycle": lambda o: optim.OneCycleLR(o, max_lr=0.5, epochs=EPOCHS, steps_per_epoch=5),
    "multistep": lambda o: optim.MultiStepLR(o, milestones=[1, 2], gamma=0.5),
    "plateau": lambda o: optim.ReduceLROnPlateau(o, factor=0.5, patience=0, threshold=0.5),
    "sequential": lambda o: optim.SequentialLR(
        o, [optim.LinearLR(o, 0.25, total_iters=1), optim.StepLR(o, 1, 0.5)], milestones=[1]
    ),
}


def start(name):
    model = tiny_model()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, optimizer, SCHEDULERS[name](optimizer)


def by_hand(model, optimizer, scheduler, train_set, epochs, per_batch, clip=None):
    """The loop fit must run: a batch scheduler after every optimizer step."""
    loss_fn = nn.CrossEntropyLoss()
    train_loader = loader(train_set)
    for _ in range(epochs):
        model.train()
        for images, labels in train_loader:
            loss_fn(model(images), labels)
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            if clip is not None:
                clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            if per_batch:
                scheduler.step()
        if not per_batch:
            scheduler.step()


def weights(model):
    return {name: value.copy() for name, value in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize(
    "name, interval, per_batch",
    [("onecycle", None, True), ("multistep", None, False), ("multistep", "batch", True)],
)
def test_fit_steps_the_scheduler_per_batch_or_per_epoch(datasets, name, interval, per_batch):
    train_set, _ = datasets
    model, optimizer, scheduler = start(name)
    if name == "multistep" and per_batch:  # milestones count batches now
        scheduler = optim.MultiStepLR(optimizer, milestones=[3, 7], gamma=0.5)
    fit(model, nn.CrossEntropyLoss(), optimizer, loader(train_set), epochs=EPOCHS,
        scheduler=scheduler, scheduler_interval=interval, progress=False)  # fmt: skip
    assert scheduler.last_epoch == EPOCHS * (5 if per_batch else 1)

    hand_model, hand_optimizer, hand_scheduler = start(name)
    if name == "multistep" and per_batch:
        hand_scheduler = optim.MultiStepLR(hand_optimizer, milestones=[3, 7], gamma=0.5)
    by_hand(hand_model, hand_optimizer, hand_scheduler, train_set, EPOCHS, per_batch)
    assert_same_weights(weights(model), weights(hand_model))
    assert scheduler.state_dict() == hand_scheduler.state_dict()


class RecordingPlateau(optim.ReduceLROnPlateau):
    def step(self, metrics):
        self.seen = [*getattr(self, "seen", []), metrics]
        super().step(metrics)


@pytest.mark.parametrize("with_val", [True, False])
def test_plateau_gets_the_validation_loss_else_the_training_loss(datasets, with_val):
    train_set, test_set = datasets
    model = tiny_model()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    scheduler = RecordingPlateau(optimizer, patience=0)
    val_loader = data.DataLoader(test_set, 8) if with_val else None
    history = fit(model, nn.CrossEntropyLoss(), optimizer, loader(train_set), val_loader,
                  epochs=2, scheduler=scheduler, progress=False)  # fmt: skip
    assert scheduler.seen == history["val_loss" if with_val else "train_loss"]


def test_plateau_skips_the_epochs_eval_every_leaves_unvalidated(datasets):
    train_set, test_set = datasets
    model = tiny_model()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    scheduler = RecordingPlateau(optimizer, patience=0)
    history = fit(model, nn.CrossEntropyLoss(), optimizer, loader(train_set),
                  data.DataLoader(test_set, 8), epochs=4, scheduler=scheduler, eval_every=2,
                  progress=False)  # fmt: skip
    validated = [loss for loss in history["val_loss"] if not np.isnan(loss)]
    assert len(validated) == 2 and scheduler.seen == validated


def test_fit_clips_the_gradient_norm_before_each_step(datasets):
    train_set, _ = datasets
    model, optimizer, scheduler = start("multistep")
    fit(model, nn.CrossEntropyLoss(), optimizer, loader(train_set), epochs=2,
        scheduler=scheduler, clip_grad_norm=0.05, progress=False)  # fmt: skip
    hand_model, hand_optimizer, hand_scheduler = start("multistep")
    by_hand(hand_model, hand_optimizer, hand_scheduler, train_set, 2, False, clip=0.05)
    assert_same_weights(weights(model), weights(hand_model))
    unclipped_model, unclipped_optimizer, unclipped_scheduler = start("multistep")
    by_hand(unclipped_model, unclipped_optimizer, unclipped_scheduler, train_set, 2, False)
    assert not np.array_equal(weights(model)["3.weight"], weights(unclipped_model)["3.weight"])


@pytest.mark.parametrize("name", SCHEDULERS)
def test_resume_continues_the_lr_sequence_exactly(datasets, name, tmp_path):
    train_set, test_set = datasets

    def run(epochs, checkpoint, resume=False):
        model, optimizer, scheduler = start(name)
        history = fit(model, nn.CrossEntropyLoss(), optimizer, loader(train_set),
                      data.DataLoader(test_set, 8), epochs=epochs, scheduler=scheduler,
                      progress=False, checkpoint=checkpoint, resume=resume)  # fmt: skip
        lrs = (
            history["lr"],
            optimizer.param_groups[0]["lr"],
            optimizer.param_groups[0]["momentum"],
        )
        return model, scheduler, lrs

    straight_model, straight_scheduler, straight_lrs = run(EPOCHS, tmp_path / "straight.npz")
    run(1, tmp_path / "stopped.npz")
    model, scheduler, lrs = run(EPOCHS, tmp_path / "stopped.npz", resume=True)
    assert lrs == straight_lrs
    assert len(set(lrs[0])) > 1  # the lr did change over the epochs
    assert scheduler.state_dict() == straight_scheduler.state_dict()
    assert_same_weights(weights(model), weights(straight_model))


def test_fit_refuses_bad_schedule_settings_before_training(datasets):
    train_set, _ = datasets
    model, optimizer, scheduler = start("onecycle")
    before = weights(model)
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"^fit: the OneCycleLR has total_steps=15, but this run "
                       r"takes 20 optimizer steps \(5 batches per epoch\)"):  # fmt: skip
        fit(model, loss_fn, optimizer, loader(train_set), epochs=4, scheduler=scheduler)
    plateau = optim.ReduceLROnPlateau(optimizer)
    with pytest.raises(ValueError, match="^fit: a ReduceLROnPlateau steps once per epoch"):
        fit(model, loss_fn, optimizer, loader(train_set), scheduler=plateau,
            scheduler_interval="batch")  # fmt: skip
    with pytest.raises(ValueError, match="^fit: scheduler_interval must be None .* got 'step'"):
        fit(model, loss_fn, optimizer, loader(train_set), scheduler_interval="step")
    with pytest.raises(ValueError, match=r"^fit: clip_grad_norm must be a number in \(0.0, inf"):
        fit(model, loss_fn, optimizer, loader(train_set), clip_grad_norm=-1.0)
    assert_same_weights(before, weights(model))


def test_resuming_a_one_cycle_run_for_more_epochs_is_refused(datasets, tmp_path):
    train_set, _ = datasets
    checkpoint = tmp_path / "run.npz"
    model, optimizer, scheduler = start("onecycle")
    fit(model, nn.CrossEntropyLoss(), optimizer, loader(train_set), epochs=1,
        scheduler=scheduler, progress=False, checkpoint=checkpoint)  # fmt: skip
    model, optimizer, scheduler = start("onecycle")
    with pytest.raises(IncompatibleCheckpointError, match=r"holds a OneCycleLR of 15 steps, 5 too"):
        fit(model, nn.CrossEntropyLoss(), optimizer, loader(train_set), epochs=4,
            scheduler=scheduler, progress=False, checkpoint=checkpoint, resume=True)  # fmt: skip
