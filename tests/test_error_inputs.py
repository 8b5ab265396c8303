"""The error-input table (PyTorch OpInfo's ``error_inputs``) for the whole public API.

Each row is one bad call, the exception type it must raise and a regex its message must
match. The bad inputs of ``fastcnn.functional`` (test_functional_errors.py), of layer
constructors, forwards and losses (test_nn_errors.py), of optimizer and scheduler
hyperparameters (test_optim.py, test_lr_scheduler.py) have their own tables; this one adds
every case they miss (functional.linear, more layers, init, optimizer steps, data, the
training loop) and ``test_every_public_callable_has_an_error_row`` checks that together
the tables leave no public function or class without a bad-input case.

A row marked xfail is a bad input that does not yet get a clear error (a raw AttributeError
from deep inside, or no error and a silently wrong result); the reason says what happens.
"""

import inspect
from pathlib import Path

import numpy as np
import pytest
import test_functional_errors
import test_lr_scheduler
import test_nn_errors
import test_optim

import fastcnn
from fastcnn import data, distributed, models, nn, onnx, optim, train
from fastcnn import functional as F
from fastcnn.nn import init
from fastcnn.nn import utils as nn_utils
from fastcnn.nn.parameter import Parameter

F32 = np.float32
X2 = np.ones((4, 3), F32)
W2 = np.ones((2, 3), F32)
DATASET = data.ArrayDataset(np.ones((8, 1, 28, 28), F32), np.arange(8))


def loader():
    return data.DataLoader(DATASET, 4)


def lenet_and_sgd():
    model = models.LeNet5(rng=0)
    return model, optim.SGD(model.parameters(), lr=0.1)


def fit(**overrides):
    """``train.fit`` on a tiny LeNet-5 run with one argument replaced."""
    model, optimizer = lenet_and_sgd()
    arguments = dict(
        model=model,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        train_loader=loader(),
        progress=False,
    )
    arguments.update(overrides)
    return train.fit(**arguments)


def with_grad(grad=None):
    """A 2x2 Parameter whose gradient is ``grad`` (ones by default), for the clipping rows."""
    param = Parameter(np.zeros((2, 2), F32))
    param.grad = np.ones((2, 2), F32) if grad is None else grad
    return [param]


def backward_before_forward(layer, grad_shape):
    return lambda: layer.backward(np.ones(grad_shape, F32))


def step_with_grad(optimizer_class, grad):
    """One step of a fresh optimizer whose only parameter has ``grad`` as its gradient."""
    param = Parameter(np.ones((2, 2), F32))
    optimizer = optimizer_class([param], lr=0.1)
    param.grad = grad
    optimizer.step()


def accumulate_twice(first, second):
    param = Parameter(np.ones((2, 2), F32))
    param.accumulate_grad(first)
    param.accumulate_grad(second)


def forward_then_backward(loss_fn, logits, target, grad):
    loss_fn(logits, target)
    return loss_fn.backward(grad)


def xfail(reason):
    return pytest.mark.xfail(strict=True, reason=reason)


BEFORE_FORWARD = r"\.backward\(\) was called before forward\(\): call the module on a batch"

# (id, call, exception type(s), message regex[, xfail reason])
ERROR_INPUTS = [
    # functional.linear / linear_backward
    (
        "linear 1-D weight",
        lambda: F.linear(X2, W2[0]),
        ValueError,
        r"^linear: weight must be 2-D, got shape \(3,\)",
    ),
    (
        "linear feature mismatch",
        lambda: F.linear(X2, np.ones((2, 4), F32)),
        ValueError,
        r"input has 3 features .* weight of shape \(2, 4\) expects 4",
    ),
    (
        "linear mixed dtypes",
        lambda: F.linear(X2, W2.astype(np.float64)),
        TypeError,
        r"weight is float64 but the input is float32",
    ),
    (
        "linear int input",
        lambda: F.linear(X2.astype(np.int64), W2),
        TypeError,
        r"input has dtype int64; .*astype\(np.float32\)",
    ),
    (
        "linear bias length",
        lambda: F.linear(X2, W2, np.ones(3, F32)),
        ValueError,
        r"bias has shape \(3,\), expected \(2,\)",
    ),
    (
        "linear_backward grad shape",
        lambda: F.linear_backward(np.ones((4, 3), F32), X2, W2),
        ValueError,
        r"^linear_backward: grad_output has shape \(4, 3\), expected \(4, 2\)",
    ),
    # layers: input dtypes not in test_nn_errors
    ("Tanh int input", lambda: nn.Tanh()(np.arange(3)), TypeError, r"^Tanh: input has dtype int64"),
    (
        "SiLU str input",
        lambda: nn.SiLU()(np.array(["a"])),
        TypeError,
        r"^SiLU: input has dtype <U1",
    ),
    (
        "Softmax int input",
        lambda: nn.Softmax(1)(np.ones((2, 3), int)),
        TypeError,
        r"^Softmax: input has dtype int64",
    ),
    (
        "MSELoss int input",
        lambda: nn.MSELoss()(np.ones(3, int), np.ones(3)),
        TypeError,
        r"^MSELoss: input has dtype int64",
    ),
    (
        "BatchNorm2d 3-D input",
        lambda: nn.BatchNorm2d(3)(np.ones((2, 3, 3), F32)),
        ValueError,
        r"BatchNorm2d: expected 4-D input, got shape \(2, 3, 3\) \(for one image, pass x\[None\]\)",
    ),
    (
        "BatchNorm2d eval channels",
        lambda: nn.BatchNorm2d(3).eval()(np.ones((2, 4, 3, 3), F32)),
        ValueError,
        r"BatchNorm2d expected input with 3 channels \(dim 1\), got shape",
    ),
    # layers: backward before any forward
    (
        "Linear backward first",
        backward_before_forward(nn.Linear(3, 2), (4, 2)),
        RuntimeError,
        "^Linear" + BEFORE_FORWARD,
    ),
    (
        "Conv2d backward first",
        backward_before_forward(nn.Conv2d(1, 2, 3), (1, 2, 2, 2)),
        RuntimeError,
        "^Conv2d" + BEFORE_FORWARD,
    ),
    (
        "MaxPool2d backward first",
        backward_before_forward(nn.MaxPool2d(2), (1, 1, 2, 2)),
        RuntimeError,
        "^MaxPool2d" + BEFORE_FORWARD,
    ),
    (
        "AvgPool2d backward first",
        backward_before_forward(nn.AvgPool2d(2), (1, 1, 2, 2)),
        RuntimeError,
        "^AvgPool2d" + BEFORE_FORWARD,
    ),
    (
        "BatchNorm2d backward first",
        backward_before_forward(nn.BatchNorm2d(1), (2, 1, 2, 2)),
        RuntimeError,
        "^BatchNorm2d" + BEFORE_FORWARD,
    ),
    (
        "Dropout backward first",
        backward_before_forward(nn.Dropout(), (3,)),
        RuntimeError,
        "^Dropout" + BEFORE_FORWARD,
    ),
    (
        "Flatten backward first",
        backward_before_forward(nn.Flatten(), (2, 3)),
        RuntimeError,
        "^Flatten" + BEFORE_FORWARD,
    ),
    (
        "Sequential backward first",
        backward_before_forward(models.LeNet5(), (1, 10)),
        RuntimeError,
        "^LeNet5" + BEFORE_FORWARD,
    ),
    (
        "CrossEntropyLoss non-scalar grad",
        lambda: forward_then_backward(nn.CrossEntropyLoss(), X2, np.arange(4) % 3, np.ones(2)),
        ValueError,
        r"CrossEntropyLoss.backward: grad_output must be a scalar .* got shape \(2,\)",
    ),
    # Parameter
    (
        "accumulate_grad wrong shape",
        lambda: accumulate_twice(np.ones((2, 2)), np.ones(2)),
        ValueError,
        r"shape \(2,\).*\(2, 2\)",
    ),
    (
        "accumulate_grad wrong first shape",
        lambda: accumulate_twice(np.ones(3), np.ones(3)),
        ValueError,
        r"shape \(3,\).*\(2, 2\)",
    ),
    # nn.init (kaiming_*, calculate_gain's name and uniform_ on a list are in test_nn_errors)
    (
        "constant_ int array",
        lambda: init.constant_(np.zeros(3, int), 1.0),
        TypeError,
        r"constant_: expected a floating NumPy array or Parameter, got ndarray",
    ),
    ("zeros_ list", lambda: init.zeros_([1.0]), TypeError, r"expected a floating NumPy array"),
    (
        "ones_ int array",
        lambda: init.ones_(np.zeros(3, int)),
        TypeError,
        r"expected a floating NumPy array",
    ),
    (
        "xavier_uniform_ 1-D",
        lambda: init.xavier_uniform_(np.zeros(3)),
        ValueError,
        r"Fan in and fan out can not be computed for tensor with fewer than 2 dimensions",
    ),
    (
        "normal_ bad rng",
        lambda: init.normal_(np.zeros(3), rng="x"),
        TypeError,
        r"normal_: rng must be a np.random.Generator, an int seed or None, got str",
    ),
    (
        "calculate_gain bad slope",
        lambda: init.calculate_gain("leaky_relu", "x"),
        ValueError,
        r"negative_slope x not a valid number",
    ),
    (
        "normal_ negative std",
        lambda: init.normal_(np.zeros(3), std=-1.0),
        ValueError,
        r"normal_: .*std.*-1",
    ),
    (
        "uniform_ a > b",
        lambda: init.uniform_(np.zeros(3), a=1.0, b=0.0),
        ValueError,
        r"uniform_: .*1(\.0)?.*0(\.0)?",
    ),
    (
        "xavier_normal_ str gain",
        lambda: init.xavier_normal_(np.zeros((3, 3)), gain="x"),
        TypeError,
        r"xavier_normal_: gain",
    ),
    # optimizer steps (hyperparameters are in test_optim)
    (
        "SGD step grad shape",
        lambda: step_with_grad(optim.SGD, np.ones(3, F32)),
        ValueError,
        r"gradient of Parameter\(shape=\(2, 2\), dtype=float32\) has shape \(3,\)",
    ),
    (
        "Adam step grad shape",
        lambda: step_with_grad(optim.Adam, np.ones(3, F32)),
        ValueError,
        r"gradient of Parameter\(shape=\(2, 2\), dtype=float32\) has shape \(3,\)",
    ),
    (
        "AdamW step grad shape",
        lambda: step_with_grad(optim.AdamW, np.ones(3, F32)),
        ValueError,
        r"has shape \(3,\), but the parameter has shape \(2, 2\)",
    ),
    (
        "SGD step grad list",
        lambda: step_with_grad(optim.SGD, [[1.0, 1.0], [1.0, 1.0]]),
        TypeError,
        r"grad",
    ),
    (
        "RMSprop step grad shape",
        lambda: step_with_grad(optim.RMSprop, np.ones(3, F32)),
        ValueError,
        r"has shape \(3,\), but the parameter has shape \(2, 2\)",
    ),
    # gradient clipping
    (
        "clip_grad_norm_ max_norm 0",
        lambda: nn_utils.clip_grad_norm_(with_grad(), 0.0),
        ValueError,
        r"^clip_grad_norm_: max_norm must be a number in \(0.0, inf\], got 0.0",
    ),
    (
        "clip_grad_norm_ norm_type -1",
        lambda: nn_utils.clip_grad_norm_(with_grad(), 1.0, norm_type=-1),
        ValueError,
        r"^clip_grad_norm_: norm_type must be a number in \(0.0, inf\], got -1.0",
    ),
    (
        "clip_grad_norm_ error_if_nonfinite str",
        lambda: nn_utils.clip_grad_norm_(with_grad(), 1.0, error_if_nonfinite="yes"),
        TypeError,
        r"^clip_grad_norm_: error_if_nonfinite must be True or False",
    ),
    (
        "clip_grad_norm_ an array",
        lambda: nn_utils.clip_grad_norm_(np.ones(3, F32), 1.0),
        TypeError,
        r"^clip_grad_norm_: parameters must be a Parameter or an iterable of Parameters .*ndarray",
    ),
    (
        "clip_grad_norm_ a list of arrays",
        lambda: nn_utils.clip_grad_norm_([np.ones(3, F32)], 1.0),
        TypeError,
        r"^clip_grad_norm_: parameters\[0\] must be a fastcnn.nn.Parameter, got ndarray",
    ),
    (
        "clip_grad_value_ negative",
        lambda: nn_utils.clip_grad_value_(with_grad(), -1.0),
        ValueError,
        r"^clip_grad_value_: clip_value must be a number in \[0.0, inf\], got -1.0",
    ),
    (
        "clip_grad_value_ int grad",
        lambda: nn_utils.clip_grad_value_(with_grad(np.ones((2, 2), int)), 1.0),
        TypeError,
        r"^clip_grad_value_: the gradient of parameters\[0\] must be a float NumPy array",
    ),
    # data
    (
        "ArrayDataset 2-D images",
        lambda: data.ArrayDataset(np.ones((10, 4)), np.arange(10)),
        ValueError,
        r"images must be \(N, C, H, W\) or \(N, H, W\), got shape \(10, 4\)",
    ),
    (
        "Pad float",
        lambda: data.Pad(1.5),
        TypeError,
        r"^Pad: padding must be an int, got float 1.5",
    ),
    (
        "AvgDownsample2x2 2-D",
        lambda: data.AvgDownsample2x2()(np.ones((5, 5), F32)),
        ValueError,
        r"AvgDownsample2x2 expects images of shape \(C, H, W\) or \(N, C, H, W\), got shape",
    ),
    (
        "RandomCrop larger than the image",
        lambda: data.RandomCrop(30)(np.ones((2, 1, 28, 28), F32)),
        ValueError,
        r"^RandomCrop: crop size \(30, 30\) is larger than the padded image size \(28, 28\) "
        r".*use a smaller size, more padding or pad_if_needed=True",
    ),
    (
        "RandomCrop negative padding",
        lambda: data.RandomCrop(28, padding=(2, -1)),
        ValueError,
        r"^RandomCrop: padding must be >= 0 on every side, got \(2, -1\)",
    ),
    (
        "RandomCrop three paddings",
        lambda: data.RandomCrop(28, padding=(1, 2, 3)),
        ValueError,
        r"^RandomCrop: padding must have 1, 2 or 4 values, got \(1, 2, 3\)",
    ),
    (
        "RandomCrop float size",
        lambda: data.RandomCrop(2.5),
        TypeError,
        r"^RandomCrop: size must be an int or a \(height, width\) pair of ints, got 2.5",
    ),
    (
        "RandomCrop padding mode",
        lambda: data.RandomCrop(28, padding=2, padding_mode="wrap"),
        ValueError,
        r"^RandomCrop: padding_mode must be one of constant, edge, reflect, symmetric, got 'wrap'",
    ),
    (
        "RandomCrop reflect wider than the image",
        lambda: data.RandomCrop(4, padding=3, padding_mode="reflect")(np.ones((1, 3, 3), F32)),
        ValueError,
        r"^RandomCrop: reflect padding \(3, 3, 3, 3\) must be smaller than the image size",
    ),
    (
        "RandomCrop 2-D input",
        lambda: data.RandomCrop(2)(np.ones((5, 5), F32)),
        ValueError,
        r"^RandomCrop expects one image \(C, H, W\) or a batch \(N, C, H, W\), got shape \(5, 5\)",
    ),
    (
        "RandomCrop str images",
        lambda: data.RandomCrop(1)(np.array([[["a"]]])),
        TypeError,
        r"^RandomCrop: images must be a numeric array, got dtype <U1",
    ),
    (
        "RandomHorizontalFlip p 1.5",
        lambda: data.RandomHorizontalFlip(1.5),
        ValueError,
        r"^RandomHorizontalFlip: p must be a number in \[0.0, 1.0\], got 1.5",
    ),
    (
        "RandomHorizontalFlip rng str",
        lambda: data.RandomHorizontalFlip()(np.ones((1, 2, 2), F32), "seed"),
        TypeError,
        r"^RandomHorizontalFlip: rng must be a np.random.Generator, an int seed or None, got str",
    ),
    (
        "RandomAffine negative degrees",
        lambda: data.RandomAffine(-10),
        ValueError,
        r"^RandomAffine: degrees must be a number in \[0.0, inf\], got -10",
    ),
    (
        "RandomAffine degrees min > max",
        lambda: data.RandomAffine((10, -10)),
        ValueError,
        r"^RandomAffine: degrees \(min, max\) must have min <= max, got \(10, -10\)",
    ),
    (
        "RandomAffine translate 1.5",
        lambda: data.RandomAffine(0, translate=(0.1, 1.5)),
        ValueError,
        r"^RandomAffine: translate must be a number in \[0.0, 1.0\], got 1.5",
    ),
    (
        "RandomAffine translate one number",
        lambda: data.RandomAffine(0, translate=0.1),
        TypeError,
        r"^RandomAffine: translate must be None or a pair of fractions, got 0.1",
    ),
    (
        "RandomAffine scale 0",
        lambda: data.RandomAffine(0, scale=(0, 1.1)),
        ValueError,
        r"^RandomAffine: scale must be a number in \(0.0, inf\], got 0",
    ),
    (
        "RandomAffine interpolation",
        lambda: data.RandomAffine(5, interpolation="bicubic"),
        ValueError,
        r"^RandomAffine: interpolation must be 'nearest' or 'bilinear', got 'bicubic'",
    ),
    (
        "RandomAffine 5-D input",
        lambda: data.RandomAffine(5)(np.ones((1, 1, 1, 4, 4), F32)),
        ValueError,
        r"^RandomAffine expects one image \(C, H, W\) or a batch \(N, C, H, W\), got shape",
    ),
    (
        "RandomAffine.apply a parameter short of the batch",
        lambda: data.RandomAffine(5).apply(
            np.ones((3, 1, 4, 4), F32),
            {
                "angle": np.zeros(2),
                "translate_x": np.zeros(3),
                "translate_y": np.zeros(3),
                "scale": np.ones(3),
            },
        ),
        ValueError,
        r"^RandomAffine.apply: params\['angle'\] must have shape \(3,\), one value per image of "
        r"the batch, got shape \(2,\); draw them with draw\(rng, batch.shape\)",
    ),
    (
        "RandomAffine.apply one image",
        lambda: data.RandomAffine(5).apply(np.ones((1, 4, 4), F32), {}),
        ValueError,
        r"^RandomAffine.apply expects a batch \(N, C, H, W\), got shape \(1, 4, 4\); call the "
        r"transform itself for one image",
    ),
    (
        "RandomAffine image wider than the kernel counts",
        lambda: data.RandomAffine(5)(np.broadcast_to(F32(0), (1, 1, 1, 2**31)), 0),
        ValueError,
        r"^RandomAffine: width = 2147483648 is too large for one image \(max 2\*\*31-1\)",
    ),
    (
        "DataLoader prefetch str",
        lambda: data.DataLoader(DATASET, 4, prefetch="yes"),
        TypeError,
        r"^DataLoader: prefetch must be True or False, got 'yes'",
    ),
    (
        "DataLoader set_epoch -1",
        lambda: loader().set_epoch(-1),
        ValueError,
        r"^DataLoader.set_epoch: epoch must be >= 0, got -1",
    ),
    (
        "read_idx missing file",
        lambda: data.read_idx("/nonexistent/t10k-images.idx"),
        FileNotFoundError,
        r"t10k-images.idx",
    ),
    (
        "write_idx str",
        lambda: data.write_idx("/nonexistent/x.idx", "text"),
        TypeError,
        r"IDX cannot store .* dtype <U4",
    ),
    (
        "DataLoader shard not a pair",
        lambda: data.DataLoader(DATASET, 2, shard=1),
        TypeError,
        r"^DataLoader: shard must be None or a pair of ints \(index, count\).*got 1",
    ),
    (
        "DataLoader shard index out of range",
        lambda: data.DataLoader(DATASET, 2, shard=(2, 2)),
        ValueError,
        r"^DataLoader: shard=\(index, count\) needs 0 <= index < count, got \(2, 2\)",
    ),
    (
        "DataLoader None dataset",
        lambda: data.DataLoader(None, 2),
        TypeError,
        r"^DataLoader: dataset must have __len__ and __getitem__ .*got NoneType",
    ),
    (
        "DataLoader bad state dict",
        lambda: loader().load_state_dict({"x": 1}),
        (KeyError, ValueError),
        r"DataLoader.load_state_dict: the state must have exactly the keys \['epoch', 'seed'\] "
        r".*got \['x'\]",
    ),
    (
        "random_split str lengths",
        lambda: data.random_split(DATASET, "ab"),
        TypeError,
        r"random_split lengths must be a sequence of ints .* or of fractions .*got str 'ab'",
    ),
    # training loop (epochs, log_every, progress, metrics and resume are in test_train)
    (
        "fit checkpoint suffix",
        lambda: fit(checkpoint="/nonexistent/run.txt"),
        ValueError,
        r"checkpoint path '.*run.txt' must end with one of .npz, .safetensors",
    ),
    (
        "fit float epochs",
        lambda: fit(epochs=1.5),
        TypeError,
        r"^fit: epochs must be an int, got float 1.5",
    ),
    (
        "evaluate unknown metric",
        lambda: train.evaluate(models.LeNet5(), loader(), metrics=["f1"]),
        ValueError,
        r"unknown metric 'f1'; use 'accuracy' \(top-1\), 'topK' such as 'top5', or a function",
    ),
    (
        "fit metric that is not a name or function",
        lambda: fit(metrics=[1.5]),
        TypeError,
        r"^metrics: each metric must be a name such as 'accuracy' .*got float 1.5",
    ),
    (
        "fit callbacks not a list",
        lambda: fit(callbacks=train.EarlyStopping()),
        TypeError,
        r"^fit: callbacks must be a list of fastcnn.train.Callback objects, got EarlyStopping",
    ),
    (
        "fit eval_every zero",
        lambda: fit(eval_every=0),
        ValueError,
        r"^fit: eval_every must be >= 1, got 0",
    ),
    (
        "EarlyStopping mode",
        lambda: train.EarlyStopping(mode="lowest"),
        ValueError,
        r"^EarlyStopping: mode must be 'min' or 'max', got 'lowest'",
    ),
    (
        "ModelCheckpoint path None",
        lambda: train.ModelCheckpoint(None),
        TypeError,
        r"^ModelCheckpoint: path must be a str or os.PathLike .*got NoneType None",
    ),
    (
        "summary input_shape with the batch of another model",
        lambda: fastcnn.summary(models.LeNet5(), (3, 28, 28)),
        ValueError,
        r"Conv2d expected input with 1 channels \(dim 1\), got shape \(1, 3, 28, 28\)",
    ),
    (
        "restore_model missing file",
        lambda: train.restore_model("/nonexistent/run.npz", models.LeNet5()),
        FileNotFoundError,
        r"run.npz",
    ),
    (
        "fit model None",
        lambda: fit(model=None),
        TypeError,
        r"^fit: model must be a fastcnn.nn.Module, got NoneType",
    ),
    (
        "fit loss_fn None",
        lambda: fit(loss_fn=None),
        TypeError,
        r"^fit: loss_fn must be a fastcnn.nn.Module .*got NoneType",
    ),
    (
        "fit loss_fn reduction none",
        lambda: fit(loss_fn=nn.CrossEntropyLoss(reduction="none")),
        ValueError,
        r"^fit: loss_fn has reduction='none' .* pass a loss with reduction='mean'",
    ),
    (
        "evaluate loss_fn reduction none",
        lambda: train.evaluate(models.LeNet5(), loader(), nn.MSELoss(reduction="none")),
        ValueError,
        r"^evaluate: loss_fn has reduction='none'",
    ),
    (
        "fit optimizer None",
        lambda: fit(optimizer=None),
        TypeError,
        r"^fit: optimizer must be a fastcnn.optim.Optimizer, got NoneType",
    ),
    (
        "fit loader of ints",
        lambda: fit(train_loader=[1, 2]),
        TypeError,
        r"^fit: train_loader must yield \(images, labels\) pairs, got a batch of type int: 1",
    ),
    (
        "fit scheduler str",
        lambda: fit(scheduler="cosine"),
        TypeError,
        r"^fit: scheduler must be a fastcnn.optim.LRScheduler or None, got str",
    ),
    (
        "eval_mode str",
        lambda: train.eval_mode("model").__enter__(),
        TypeError,
        r"^eval_mode: model must be a fastcnn.nn.Module, got str",
    ),
    (
        "topk_correct k=0",
        lambda: train.topk_correct(np.eye(3), np.arange(3), 0),
        ValueError,
        r"^topk_correct: k must be positive, got 0",
    ),
    (
        "topk_correct label count",
        lambda: train.topk_correct(np.eye(3), np.array([0]), 1),
        ValueError,
        r"labels of shape \(1,\) do not fit logits of shape \(3, 3\)",
    ),
]


def as_param(row):
    name, call, error, match, *reason = row
    marks = [xfail(reason[0])] if reason else []
    return pytest.param(call, error, match, id=name, marks=marks)


@pytest.mark.parametrize("call, error, match", [as_param(row) for row in ERROR_INPUTS])
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------ coverage

# Public names that take no bad input of their own, with the reason.
NO_BAD_INPUT = {
    "get_num_threads": "no arguments",
    "no_grad": "no arguments",
    "enable_grad": "no arguments",
    "is_grad_enabled": "no arguments",
    "show_config": "no arguments",
    "output_size": "the output-size formula on ints; callers validate",
    "Identity": "accepts any input by definition",
    "Module": "abstract base (test_nn_module)",
    "Dataset": "abstract base",
    "RandomTransform": "abstract base (its subclasses' rows are above)",
    "LRScheduler": "abstract base (test_lr_scheduler)",
    "Optimizer": "abstract base (test_optim)",
    "History": "built by fit (test_train)",
    "Callback": "a base class whose hooks do nothing (test_callbacks)",
    "Run": "built by fit, shown to callbacks (test_callbacks)",
    "ModelSummary": "built by summary (test_summary)",
    "LayerRow": "a record built by summary (test_summary)",
    "embedded_mnist": "one flag, train, read as a bool (as torchvision's MNIST)",
    "init": "num_threads is checked by set_num_threads; a launcher of another MPI in "
    "test_distributed",
    "is_initialized": "no arguments",
    "get_world_size": "no arguments (before init: test_distributed)",
    "launched_world_size": "no arguments",
}

# Covered by ad-hoc pytest.raises checks in another test file (the test below checks that
# the file names the callable next to a pytest.raises).
ELSEWHERE = {
    "set_num_threads": "test_threads.py",
    "set_grad_enabled": "test_grad_mode.py",
    "inference_mode": "test_grad_mode.py",
    "Residual": "test_resnet.py",
    "Concat": "test_concat.py",
    "BasicBlock": "test_resnet.py",
    "ResNet20": "test_resnet.py",
    "MobileNetCIFAR": "test_resnet.py",
    "depthwise_separable": "test_resnet.py",
    "threads": "test_threads.py",
    "DistributedDataParallel": "test_distributed.py",
    "get_rank": "test_distributed.py",
    "gradcheck": "test_gradcheck.py",
    "save": "test_io.py",
    "load": "test_io.py",
    "MNIST": "test_data_mnist.py",
    "CIFAR10": "test_data_cifar.py",
    "ImageListDataset": "test_data_image_list.py",
    "Subset": "test_data_loader.py",
    "random_split": "test_data_loader.py",
    "filter_classes": "test_data_loader.py",
    "one_hot": "test_data_loader.py",
    "Normalize": "test_data_loader.py",
    "Compose": "test_data_loader.py",
    "DataLoader": "test_data_loader.py",
    "predict": "test_train.py",
    "load_checkpoint": "test_train.py",
    "fit": "test_train.py",
    "Sequential": "test_nn_module.py",
    "export": "test_onnx.py",
}

PUBLIC_MODULES = [fastcnn, F, nn, init, nn_utils, optim, data, train, models, onnx, distributed]


def public_callables():
    """Every public function and class, except exceptions (raised, never called)."""
    names = set()
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isfunction(value) or (
                inspect.isclass(value) and not issubclass(value, BaseException)
            ):
                names.add(name)
    return names


def names_in(call):
    """Names a table row's callable refers to (``nn.Conv2d(...)`` gives 'nn', 'Conv2d')."""
    if not callable(call) or not hasattr(call, "__code__"):
        return {type(call).__name__}  # a module instance (test_nn_errors.FORWARDS)
    names = set(call.__code__.co_names)
    for value in call.__closure__ or ():
        names |= names_in(value.cell_contents) if callable(value.cell_contents) else set()
    return names


def names_covered_by_tables():
    names = set()
    for row in ERROR_INPUTS:
        names |= names_in(row[1])
    for row in test_functional_errors.ERROR_INPUTS:
        names.add(row[0].split()[0])  # rows are named "<function> <case>"
    for row in test_nn_errors.CONSTRUCTORS + test_nn_errors.LOSS_CALLS:
        names |= names_in(row[0])
    for row in test_nn_errors.FORWARDS:
        names.add(type(row[0]).__name__)
    for row in (
        test_optim.BAD_ARGUMENTS + test_lr_scheduler.BAD + test_lr_scheduler.BAD_WITH_OPTIMIZER
    ):
        names.add(row[0].__name__)
    if {"_ce"} & names:
        names.add("CrossEntropyLoss")
    return names


def test_every_public_callable_has_an_error_row():
    missing = public_callables() - names_covered_by_tables() - set(NO_BAD_INPUT) - set(ELSEWHERE)
    assert not missing, f"public callables with no bad-input case anywhere: {sorted(missing)}"


@pytest.mark.parametrize("name, filename", sorted(ELSEWHERE.items()))
def test_callables_covered_elsewhere_really_are(name, filename):
    text = (Path(__file__).parent / filename).read_text()
    lines = text.splitlines()
    raises = [i for i, line in enumerate(lines) if "pytest.raises" in line]
    assert any(name in "\n".join(lines[max(0, i - 8) : i + 4]) for i in raises), (
        f"{filename} has no pytest.raises near a use of {name}"
    )
