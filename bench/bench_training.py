"""Training step and inference of LeNet-5 and a CIFAR-style net: fastcnn vs PyTorch CPU vs
the NumPy book.

One training step = forward, cross-entropy loss, backward, SGD with momentum 0.9. The
implementations run the same architecture on the same data, PyTorch's twin starting from
fastcnn's weights (its state dict loads as is); they are alternated round by round after a
warm-up and the median over rounds is reported, with ratio = other time / fastcnn time
(> 1: fastcnn is faster). fastcnn is also timed at 1 thread for the thread-scaling figure.

The models:

- ``lenet5``: fastcnn.models.LeNet5 (ReLU, max-pool, 28x28x1 input), steps at --batches
  (64 and 256), inference in eval mode at the largest; the NumPy book runs it too.
- ``cifar``: a CIFAR-style net on 3x32x32 input, conv1 3->32, conv2 32->64, conv3 64->128
  (each 3x3, padding 1, then ReLU and a 2x2 max-pool: 32 -> 16 -> 8 -> 4), flatten, and
  one Linear 128*4*4 -> 10 giving the logits: no hidden fully-connected layer, so the
  step is the three convolutions' (fused Conv2d -> ReLU -> MaxPool2d in fastcnn's
  Sequential) and little else. Step at --cifar-batches (64), inference in eval mode at
  --cifar-infer-batch (256); fastcnn and PyTorch only (the book's code is LeNet-5's).
- ``resnet20``: fastcnn.models.ResNet20 (He et al.'s CIFAR ResNet, BatchNorm in training
  mode) on 3x32x32 input, steps at --cifar-batches; PyTorch's twin is tests/torch_twins.py.
- ``mobilenet``: fastcnn.models.MobileNetCIFAR (depthwise-separable blocks), likewise.

Each row records ``fused_stages`` (how many runs of layers fastcnn fuses in the model:
Conv2d -> ReLU -> MaxPool2d, BatchNorm -> ReLU) and
``twin_max_abs_diff``, the largest difference between fastcnn's and PyTorch's logits on the
batch before timing (the twins compute the same function).

Run:  python bench/bench_training.py [--threads 2] [--rounds 7] [--models lenet5 cifar]
                                     [--json out.json]
"""

import json
import os
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # siblings in bench/
import numpy_book  # noqa: E402

# the torch twins of fastcnn's models, one home with the parity tests
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import torch_twins  # noqa: E402
from bench_kernels import bench_main, time_rounds  # noqa: E402

import fastcnn  # noqa: E402

# The CIFAR-style net as (name, layer class, args), built from fastcnn.nn or torch.nn alike:
# the names are the state-dict prefixes, so fastcnn's weights load into the torch twin.
CIFAR_LAYERS = (
    ("conv1", "Conv2d", (3, 32, 3), {"padding": 1}),
    ("act1", "ReLU", (), {}),
    ("pool1", "MaxPool2d", (2,), {}),
    ("conv2", "Conv2d", (32, 64, 3), {"padding": 1}),
    ("act2", "ReLU", (), {}),
    ("pool2", "MaxPool2d", (2,), {}),
    ("conv3", "Conv2d", (64, 128, 3), {"padding": 1}),
    ("act3", "ReLU", (), {}),
    ("pool3", "MaxPool2d", (2,), {}),
    ("flatten", "Flatten", (), {}),
    ("fc", "Linear", (128 * 4 * 4, 10), {}),
)
INPUT_SHAPES = {
    "lenet5": (1, 28, 28),
    "cifar": (3, 32, 32),
    "resnet20": (3, 32, 32),
    "mobilenet": (3, 32, 32),
}
# fastcnn's models on 3x32x32 input that have a torch twin in tests/torch_twins.py
NETS_32 = ("resnet20", "mobilenet")


def cifar_net(nn, rng=None):
    """The CIFAR-style net from ``nn`` (fastcnn.nn, or torch.nn with rng None)."""
    layers = OrderedDict()
    for name, cls, args, kwargs in CIFAR_LAYERS:
        if rng is not None and cls in ("Conv2d", "Linear"):
            kwargs = {**kwargs, "rng": rng}
        layers[name] = getattr(nn, cls)(*args, **kwargs)
    return nn.Sequential(layers)


def in_eval_mode(model, forward):
    """forward(x) run in eval mode, as inference is (either library's model)."""

    def infer(x):
        model.eval()
        out = forward(x)
        model.train()
        return out

    return infer


def fastcnn_builder(make):
    """build(seed) -> (model, training step, eval-mode inference) of the fastcnn model
    ``make(rng)``."""

    def build(seed):
        model = make(np.random.default_rng(seed))
        step, forward = _fastcnn_train_fns(model)
        return model, step, in_eval_mode(model, forward)

    return build


def torch_builder(make):
    """build(torch, state_dict) -> (training step, eval-mode inference) of the PyTorch twin
    ``make(torch)`` with fastcnn's weights."""

    def build(torch, state_dict):
        model = make(torch)
        step, forward = _torch_train_fns(torch, model, state_dict)
        return step, in_eval_mode(model, forward)

    return build


def _fastcnn_train_fns(model):
    opt = fastcnn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = fastcnn.nn.CrossEntropyLoss()

    def step(x, y):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        return loss

    def infer(x):
        return model(x)

    return step, infer


def torch_lenet_net(nn):
    """fastcnn.models.LeNet5 in torch.nn, with its layers' state-dict names."""
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 6, 5, padding=2)),
                ("act1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(6, 16, 5)),
                ("act2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(400, 120)),
                ("act3", nn.ReLU()),
                ("fc2", nn.Linear(120, 84)),
                ("act4", nn.ReLU()),
                ("fc3", nn.Linear(84, 10)),
            ]
        )
    )


def load_fastcnn_weights(torch, model, state_dict):
    """Load fastcnn's state dict into its torch twin ``model`` (the keys are the same)."""
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()})
    return model


def _torch_train_fns(torch, model, state_dict):
    nn = torch.nn
    load_fastcnn_weights(torch, model, state_dict)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    def infer(x):
        with torch.no_grad():
            return model(torch.from_numpy(x))

    return step, infer


class BookLeNet:
    """LeNet-5 in the NumPy book's style: whole-batch im2col layers, momentum SGD."""

    def __init__(self, state_dict, lr=0.01, momentum=0.9):
        sd = {k: np.array(v) for k, v in state_dict.items()}
        self.conv1 = numpy_book.Convolution(sd["conv1.weight"], sd["conv1.bias"], 1, 2)
        self.conv2 = numpy_book.Convolution(sd["conv2.weight"], sd["conv2.bias"], 1, 0)
        self.pool1, self.pool2 = numpy_book.Pooling(2, 2), numpy_book.Pooling(2, 2)
        self.fc = [(sd[f"fc{i}.weight"].T.copy(), sd[f"fc{i}.bias"]) for i in (1, 2, 3)]
        self.lr, self.momentum = lr, momentum
        self.velocity = None

    def forward(self, x):
        self.masks, self.acts = [], []
        h = self.conv1.forward(x)
        self.masks.append(h > 0)
        h = self.pool1.forward(h * self.masks[-1])
        h = self.conv2.forward(h)
        self.masks.append(h > 0)
        h = self.pool2.forward(h * self.masks[-1])
        self.flat_shape = h.shape
        h = h.reshape(len(x), -1)
        for i, (w, b) in enumerate(self.fc):
            self.acts.append(h)
            h = h @ w + b
            if i < 2:
                self.masks.append(h > 0)
                h = h * self.masks[-1]
        return h

    def step(self, x, y):
        logits = self.forward(x)
        shifted = logits - logits.max(axis=1, keepdims=True)
        prob = np.exp(shifted)
        prob /= prob.sum(axis=1, keepdims=True)
        loss = -np.log(prob[np.arange(len(y)), y] + 1e-7).mean()
        d = prob
        d[np.arange(len(y)), y] -= 1
        d /= len(y)
        grads = []
        for i in (2, 1, 0):
            w, b = self.fc[i]
            grads.append((self.acts[i].T @ d, d.sum(axis=0)))
            d = d @ w.T
            if i > 0:
                d = d * self.masks[1 + i]
        d = d.reshape(self.flat_shape)
        d = self.pool2.backward(d) * self.masks[1]
        d = self.conv2.backward(d)
        d = self.pool1.backward(d) * self.masks[0]
        self.conv1.backward(d, need_dx=False)
        grads = grads[::-1] + [(self.conv1.dW, self.conv1.db), (self.conv2.dW, self.conv2.db)]
        params = [*self.fc, (self.conv1.W, self.conv1.b), (self.conv2.W, self.conv2.b)]
        if self.velocity is None:
            self.velocity = [[np.zeros_like(p) for p in pair] for pair in params]
        for pair, gpair, vpair in zip(params, grads, self.velocity, strict=True):
            for p, g, v in zip(pair, gpair, vpair, strict=True):
                v *= self.momentum
                v += g
                p -= self.lr * v
        return float(loss)


def cases(args):
    """(model, batch, time the step, time inference) in the order they run."""
    result = []
    if "lenet5" in args.models:
        result += [("lenet5", b, True, b == max(args.batches)) for b in args.batches]
    if "cifar" in args.models:
        result += [("cifar", b, True, b == args.cifar_infer_batch) for b in args.cifar_batches]
        if args.cifar_infer_batch and args.cifar_infer_batch not in args.cifar_batches:
            result.append(("cifar", args.cifar_infer_batch, False, True))
    for name in NETS_32:  # training steps at the CIFAR-style net's batches
        if name in args.models:
            result += [(name, b, True, False) for b in args.cifar_batches]
    return result


def run(args, torch):
    rng = np.random.default_rng(0)
    rows = []
    for model_name, batch, with_step, with_inference in cases(args):
        x = rng.random((batch, *INPUT_SHAPES[model_name]), dtype=np.float32)
        y = rng.integers(0, 10, batch).astype(np.int64)
        impls, checks = batch_impls(model_name, x, y, args, torch, with_step, with_inference)
        times = time_rounds(impls, args.rounds)
        for measure in ("step", "infer"):
            if f"fastcnn {measure}" in times:
                rows.append({"model": model_name, **result_row(batch, measure, times), **checks})
                print(
                    json.dumps(
                        {
                            k: float(f"{v:.4g}") if isinstance(v, float) else v
                            for k, v in rows[-1].items()
                        }
                    ),
                    flush=True,
                )
    return rows


BUILDERS = {
    "lenet5": (
        fastcnn_builder(lambda rng: fastcnn.models.LeNet5(rng=rng)),
        torch_builder(lambda torch: torch_lenet_net(torch.nn)),
    ),
    "cifar": (
        fastcnn_builder(lambda rng: cifar_net(fastcnn.nn, rng=rng)),
        torch_builder(lambda torch: cifar_net(torch.nn)),
    ),
    "resnet20": (
        fastcnn_builder(lambda rng: fastcnn.models.ResNet20(rng=rng)),
        torch_builder(torch_twins.torch_resnet20),
    ),
    "mobilenet": (
        fastcnn_builder(lambda rng: fastcnn.models.MobileNetCIFAR(rng=rng)),
        torch_builder(torch_twins.torch_mobilenet_cifar),
    ),
}


def batch_impls(model_name, x, y, args, torch, with_step, with_inference):
    """The callables timed for one model and batch (training steps, inference, as asked),
    and the checks recorded with its rows: fused stages, fastcnn-vs-torch logits."""
    build_fastcnn, build_torch = BUILDERS[model_name]
    model, fc_step, fc_infer = build_fastcnn(0)
    sd = model.state_dict()
    checks = {"fused_stages": fused_stages(model), "twin_max_abs_diff": None}
    impls = {}
    if with_step:
        impls["fastcnn step"] = lambda: fc_step(x, y)
        impls["fastcnn-1thread step"] = lambda: _one_thread(fc_step, x, y)
    if torch is not None:
        t_step, t_infer = build_torch(torch, sd)
        checks["twin_max_abs_diff"] = float(
            np.abs(np.asarray(fc_infer(x)) - t_infer(x).numpy()).max()
        )
        if with_step:
            impls["torch step"] = lambda: t_step(x, y)
    if with_step and not args.no_book and model_name == "lenet5":
        book = BookLeNet(sd)
        impls["numpy-book step"] = lambda: book.step(x, y)
    if with_inference:
        impls["fastcnn infer"] = lambda: fc_infer(x)
        if torch is not None:
            impls["torch infer"] = lambda: t_infer(x)
    return impls, checks


def fused_stages(model):
    """How many runs of layers fastcnn fuses in ``model``: Conv2d -> ReLU -> MaxPool2d and
    BatchNorm -> ReLU in any of its Sequentials, and each BasicBlock's bn1 -> relu."""
    from fastcnn import models, nn
    from fastcnn.nn import _fusion

    count = 0
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            stages = _fusion.stages(list(module))
            count += sum(isinstance(stage, _fusion.FusedStage) for stage in stages)
        elif isinstance(module, models.BasicBlock):
            count += _fusion.norm_relu_fusable(module.bn1, module.relu)
    return count


def result_row(batch, measure, times):
    fc = times[f"fastcnn {measure}"]
    row = {"batch": batch, "measure": measure, "fastcnn_ms": fc * 1e3}
    for other in ("torch", "numpy-book", "fastcnn-1thread"):
        t = times.get(f"{other} {measure}")
        row[f"{other}_ms"] = None if t is None else t * 1e3
        row[f"{other}/fastcnn"] = None if t is None else t / fc
    row["fastcnn_images_per_s"] = batch / fc
    return row


def _one_thread(fn, *args):
    with fastcnn.threads(1):
        return fn(*args)


def main(argv=None):
    def batches(parser):
        parser.add_argument(
            "--models", nargs="+", choices=sorted(BUILDERS), default=sorted(BUILDERS)
        )
        parser.add_argument(
            "--batches",
            type=int,
            nargs="+",
            default=[64, 256],
            help="LeNet-5 step batches; inference at the largest",
        )
        parser.add_argument(
            "--cifar-batches",
            type=int,
            nargs="+",
            default=[64],
            help="step batches of the CIFAR-style net and the 32x32 models (ResNet-20)",
        )
        parser.add_argument(
            "--cifar-infer-batch",
            type=int,
            default=256,
            help="CIFAR-style net inference batch (0: none)",
        )

    bench_main(__doc__.splitlines()[0], run, argv, [batches])


if __name__ == "__main__":
    main()
