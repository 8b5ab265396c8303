"""LeNet-5 training step and inference: fastcnn vs PyTorch CPU vs the NumPy book.

One training step = forward, cross-entropy loss, backward, SGD with momentum. The three
implementations run the same architecture (LeNet-5, ReLU, max-pool, 28x28 input) on the same
data; they are alternated round by round after a warm-up and the median over rounds is
reported, with ratio = other time / fastcnn time (> 1: fastcnn is faster). fastcnn is also
timed at 1 thread for the thread-scaling figure.

Run:  python bench/bench_training.py [--threads 2] [--rounds 7] [--json out.json]
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # siblings in bench/
import numpy_book  # noqa: E402
from bench_kernels import bench_main, time_rounds  # noqa: E402

import fastcnn  # noqa: E402


def fastcnn_lenet(seed):
    model = fastcnn.models.LeNet5(rng=np.random.default_rng(seed))
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

    return model, step, infer


def torch_lenet(torch, state_dict):
    from collections import OrderedDict

    nn = torch.nn
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 5, padding=2)), ("act1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("act2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(400, 120)), ("act3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("act4", nn.ReLU()), ("fc3", nn.Linear(84, 10)),
    ]))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()})
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


def run(args, torch):
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batches:
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, batch).astype(np.int64)
        times = time_rounds(batch_impls(x, y, args, torch, batch == max(args.batches)),
                            args.rounds)
        for measure in ("step", "infer"):
            if f"fastcnn {measure}" in times:
                rows.append(result_row(batch, measure, times))
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                  for k, v in rows[-1].items()}), flush=True)
    return rows


def batch_impls(x, y, args, torch, with_inference):
    """The callables timed for one batch: training steps, and inference if asked."""
    model, fc_step, fc_infer = fastcnn_lenet(0)
    sd = model.state_dict()
    impls = {"fastcnn step": lambda: fc_step(x, y),
             "fastcnn-1thread step": lambda: _one_thread(fc_step, x, y)}
    if torch is not None:
        t_step, t_infer = torch_lenet(torch, sd)
        impls["torch step"] = lambda: t_step(x, y)
    if not args.no_book:
        book = BookLeNet(sd)
        impls["numpy-book step"] = lambda: book.step(x, y)
    if with_inference:
        impls["fastcnn infer"] = lambda: fc_infer(x)
        if torch is not None:
            impls["torch infer"] = lambda: t_infer(x)
    return impls


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
        parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])

    bench_main(__doc__.splitlines()[0], run, argv, [batches])


if __name__ == "__main__":
    main()
