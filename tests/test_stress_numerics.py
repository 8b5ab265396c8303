"""Non-finite and extreme values: NaN and Inf go through every layer forward and backward
without a crash and land where PyTorch puts them; huge logits keep the loss and its gradient
finite; a diverging fit stops at once and leaves the checkpoint file alone. (A run that
diverges after a good epoch is in test_train.py.)"""

import os

import numpy as np
import pytest

import fastcnn
from fastcnn import data, models, nn, optim, train

torch = pytest.importorskip("torch")


def poisoned(shape, dtype=np.float32, seed=0):
    """Random data with a NaN in sample 0, +Inf in sample 1 and -Inf in sample 2."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    flat = x.reshape(shape[0], -1)
    for sample, value in enumerate((np.nan, np.inf, -np.inf)):
        flat[sample, flat.shape[1] // 2] = value
    return x


def as_torch(module, torch_module):
    """``torch_module`` with ``module``'s state (the state-dict keys match PyTorch's)."""
    state = {key: torch.from_numpy(np.array(value)) for key, value in module.state_dict().items()}
    torch_module.load_state_dict(state, strict=True)
    return torch_module


# (fastcnn layer, the same layer in torch, input shape)
LAYERS = [
    (
        "Conv2d",
        lambda: nn.Conv2d(2, 3, 3, padding=1, rng=0),
        lambda: torch.nn.Conv2d(2, 3, 3, padding=1),
        (4, 2, 6, 6),
    ),
    (
        "Conv2d-stride",
        lambda: nn.Conv2d(2, 3, (3, 2), stride=2, rng=0),
        lambda: torch.nn.Conv2d(2, 3, (3, 2), stride=2),
        (4, 2, 7, 6),
    ),
    ("Linear", lambda: nn.Linear(5, 4, rng=0), lambda: torch.nn.Linear(5, 4), (4, 5)),
    ("ReLU", nn.ReLU, torch.nn.ReLU, (4, 2, 3, 3)),
    ("Sigmoid", nn.Sigmoid, torch.nn.Sigmoid, (4, 6)),
    ("Tanh", nn.Tanh, torch.nn.Tanh, (4, 6)),
    ("SiLU", nn.SiLU, torch.nn.SiLU, (4, 6)),
    ("Softmax", lambda: nn.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1), (4, 6)),
    ("MaxPool2d", lambda: nn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2), (4, 2, 6, 6)),
    (
        "MaxPool2d-padded",
        lambda: nn.MaxPool2d(3, 2, 1),
        lambda: torch.nn.MaxPool2d(3, 2, 1),
        (4, 2, 7, 7),
    ),
    ("AvgPool2d", lambda: nn.AvgPool2d(3, 1, 1), lambda: torch.nn.AvgPool2d(3, 1, 1), (4, 2, 5, 5)),
    ("BatchNorm2d", lambda: nn.BatchNorm2d(2), lambda: torch.nn.BatchNorm2d(2), (4, 2, 3, 3)),
    ("BatchNorm1d", lambda: nn.BatchNorm1d(6), lambda: torch.nn.BatchNorm1d(6), (4, 6)),
    ("Flatten", nn.Flatten, torch.nn.Flatten, (4, 2, 3, 3)),
]


def assert_same_non_finite(ours, theirs, what):
    """NaN where torch has NaN, +-Inf where it has +-Inf, the finite rest close."""
    ours, theirs = np.asarray(ours), theirs.detach().numpy()
    assert ours.shape == theirs.shape, what
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=f"{what}: NaN")
    for sign in (1, -1):
        np.testing.assert_array_equal(
            ours == sign * np.inf, theirs == sign * np.inf, err_msg=f"{what}: {sign:+d} Inf"
        )
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(
        ours[finite], theirs[finite], rtol=1e-4, atol=1e-5, err_msg=f"{what}: finite values"
    )


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name, make, make_torch, shape", LAYERS, ids=[r[0] for r in LAYERS])
def test_nan_and_inf_go_where_torch_puts_them(name, make, make_torch, shape, training):
    layer = make().train(training)
    reference = as_torch(layer, make_torch()).train(training)
    x = poisoned(shape)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf arithmetic is the point
        out = layer(x)
        t_out = reference(tx)
        assert_same_non_finite(out, t_out, f"{name} forward")
        grad = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
        t_out.backward(torch.from_numpy(grad))
        grad_x = layer.backward(grad)
    assert_same_non_finite(grad_x, tx.grad, f"{name} input gradient")
    torch_params = dict(reference.named_parameters())
    for key, param in layer.named_parameters():
        assert_same_non_finite(param.grad, torch_params[key].grad, f"{name} {key}.grad")


def test_a_poisoned_image_leaves_the_rest_of_the_batch_alone():
    """In eval mode every image is computed on its own: NaN/Inf in images 0-2 change nothing
    in image 3, forward or input gradient, in a whole LeNet-5."""
    model = models.LeNet5(rng=0).eval()
    x = poisoned((4, 1, 28, 28))
    clean = x.copy()
    clean[:3] = 0
    with np.errstate(invalid="ignore", over="ignore"):
        out = model(x)
        grad_x = model.backward(np.ones_like(out), input_grad=True)
    assert np.isnan(out[0]).all()
    assert not np.isfinite(out[1:3]).all()
    want = model(clean)
    want_grad = model.backward(np.ones_like(want), input_grad=True)
    np.testing.assert_array_equal(out[3], want[3])
    np.testing.assert_array_equal(grad_x[3], want_grad[3])


LOGITS = {
    "all 1e4": lambda: np.full((3, 5), 1e4),
    "all -1e4": lambda: np.full((3, 5), -1e4),
    "mixed +-1e4": lambda: np.array([[1e4, -1e4, 0, 5, -5]] * 3),
    "one huge winner": lambda: np.array(
        [[1e4, 0, 0, 0, 0], [0, -1e4, 0, 0, 1e4], [-1e4, -1e4, -1e4, -1e4, 1e4]]
    ),
    "mixed +-1e30": lambda: np.array([[1e30, -1e30, 0, 1, 2]] * 3),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", list(LOGITS))
def test_huge_logits_keep_cross_entropy_finite(kind, reduction, dtype):
    logits = LOGITS[kind]().astype(dtype)
    targets = {
        "labels": np.array([0, 1, 4]),
        "probabilities": np.eye(5, dtype=dtype)[[0, 1, 4]] * 0.8 + 0.04,
    }
    for target_kind, target in targets.items():
        loss_fn = nn.CrossEntropyLoss(reduction=reduction)
        loss = loss_fn(logits, target)
        grad = loss_fn.backward()
        assert np.isfinite(loss), (target_kind, loss)
        assert grad.dtype == dtype and np.isfinite(grad).all(), (target_kind, grad)
        t_logits = torch.from_numpy(logits.copy()).requires_grad_(True)
        t_loss = torch.nn.functional.cross_entropy(
            t_logits, torch.from_numpy(target), reduction=reduction
        )
        t_loss.backward()
        np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-5)
        np.testing.assert_allclose(grad, t_logits.grad.numpy(), rtol=1e-5, atol=1e-7)


NON_FINITE_ROWS = {  # one row each; every class is the target in turn
    "+inf": [np.inf, 0, 1],
    "-inf": [-np.inf, 0, 1],
    "nan": [np.nan, 0, 1],
    "two +inf": [np.inf, np.inf, 0],
    "all -inf": [-np.inf, -np.inf, -np.inf],
    "+inf and -inf": [np.inf, -np.inf, 0],
    "float32 overflow in the shift": [3e38, -3e38, 0],
}


@pytest.mark.parametrize("kind", list(NON_FINITE_ROWS))
def test_non_finite_logits_give_torchs_loss_without_a_warning(kind):
    """Logits that blew up give the loss torch gives (NaN or inf: what fit stops on), with
    no NumPy warning (the suite turns warnings into errors); the log-softmax is torch's."""
    logits = np.array([NON_FINITE_ROWS[kind]], dtype=np.float32)
    t_logits = torch.from_numpy(logits)
    want_log_probs = torch.log_softmax(t_logits, 1).numpy()
    for k in range(3):
        for target in (np.array([k]), np.eye(3, dtype=np.float32)[[k]]):
            loss_fn = nn.CrossEntropyLoss()
            loss = loss_fn(logits, target)
            # _saved() uses up the cache backward needs: look at it, then forward again
            np.testing.assert_array_equal(loss_fn._saved()["log_probs"], want_log_probs)
            loss_fn(logits, target)
            loss_fn.backward()
            want = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(target)).item()
            np.testing.assert_array_equal(loss, want)  # NaN equals NaN here
    mse = nn.MSELoss()
    loss = mse(logits, np.zeros_like(logits) + np.float32(3e38))
    mse.backward()
    assert not np.isfinite(loss)


def test_fit_diverging_from_the_first_batch_stops_and_leaves_the_checkpoint_alone(tmp_path):
    """A learning rate of 1e12: the loss is non-finite within the first epoch, before any
    checkpoint of this run; fit raises NonFiniteLossError naming the epoch, batch and the fix,
    and the checkpoint file of an earlier run is byte for byte what it was."""
    rng = np.random.default_rng(0)
    dataset = data.ArrayDataset(
        rng.standard_normal((64, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 64)
    )
    path = tmp_path / "run.npz"

    def run(lr, epochs):
        model = models.LeNet5(rng=0)
        optimizer = optim.SGD(model.parameters(), lr=lr)
        return train.fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            data.DataLoader(dataset, 16, seed=0),
            epochs=epochs,
            progress=False,
            checkpoint=path,
        )

    run(0.01, 1)
    before = path.read_bytes()
    with pytest.raises(
        train.NonFiniteLossError, match=r"at epoch 1, batch \d+: .*lower learning rate"
    ) as caught:
        run(1e12, 3)
    assert caught.value.epoch == 1 and not np.isfinite(caught.value.loss)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.npz"]  # no temporary file left behind
    assert fastcnn.load(path)["epoch"] == 1
