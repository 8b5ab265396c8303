"""LeNet-5 on the full MNIST: epochs to reach the target test accuracy, time per epoch, and
(with --torch) the same recipe in PyTorch, timed in the same run at the same thread count.

The recipe: fastcnn.models.LeNet5 (ReLU, max pooling), inputs normalised with MNIST's mean
and std, batches of 32, SGD (lr 0.02, momentum 0.9, weight decay 5e-4), cosine learning-rate
decay over the epochs, cross-entropy; with --augment, each training image rotated by up to
10 degrees and shifted by up to 10% (RandomAffine, as `fastcnn train --augment`). The
PyTorch twin is the same network built from torch.nn layers with the same names, starting
from fastcnn's initial weights (its state dict loads as is), trained on the very same
batches (one fastcnn DataLoader feeds both) with torch.optim.SGD and CosineAnnealingLR.
The two trainings alternate epoch by epoch, so a change in machine load hits both.

    python bench/train_mnist.py --torch              # 10 epochs, both libraries
    python bench/train_mnist.py --epochs 1 --limit 2000 --json
    python bench/train_mnist.py --augment --epochs 20 --threads 1   # the 99.4% recipe
    python bench/train_mnist.py --model resnet20 --epochs 3 --batch-size 64 --lr 0.05
    python bench/train_mnist.py --model resnet20 --augment --epochs 10 --batch-size 64 \
        --lr 0.05 --target 0.996                  # the ResNet-20 99.6% recipe

With --model resnet20: models.ResNet20(in_channels=1), the images padded to 32x32 with the
background value, as in issue 14's real-data check (PyTorch's twin: tests/torch_twins.py).
"""

import argparse
import json
import os
import platform
import sys
import time
from collections import OrderedDict

import numpy as np

import fastcnn
from fastcnn import data, models, nn, optim
from fastcnn.train import evaluate

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/datasets/mnist", help="MNIST directory")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.99, help="test accuracy to reach")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", action="store_true", help="random rotations and shifts")
    parser.add_argument("--model", choices=("lenet5", "resnet20"), default="lenet5")
    parser.add_argument("--threads", type=int, default=None, help="default: fastcnn's default")
    parser.add_argument("--limit", type=int, default=None, help="first N training images only")
    parser.add_argument("--torch", action="store_true", help="also train the PyTorch twin")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    return parser.parse_args(argv)


def make_optimizer(module, parameters, args):
    """The same optimizer from ``fastcnn.optim`` or ``torch.optim`` (same names, same maths)."""
    if args.optimizer == "adam":
        return module.Adam(parameters, lr=args.lr, weight_decay=args.weight_decay)
    return module.SGD(
        parameters, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )


# ------------------------------------------------------------------------------ fastcnn


class FastcnnRun:
    """LeNet-5 trained with fastcnn's layers and optimizer."""

    name = "fastcnn"

    def __init__(self, args):
        rng = np.random.default_rng(args.seed)
        if args.model == "resnet20":
            self.model = models.ResNet20(num_classes=10, in_channels=1, rng=rng)
        else:
            self.model = models.LeNet5(rng=rng)
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = make_optimizer(optim, self.model.parameters(), args)
        self.scheduler = optim.CosineAnnealingLR(self.optimizer, T_max=args.epochs)

    def train_epoch(self, batches):
        self.model.train()
        for images, labels in batches:
            self.loss_fn(self.model(images), labels)
            self.optimizer.zero_grad()
            self.model.backward(self.loss_fn.backward())
            self.optimizer.step()
        self.scheduler.step()

    def test_accuracy(self, test_loader):
        return evaluate(self.model, test_loader, metrics=("accuracy",))["accuracy"]


# -------------------------------------------------------------------------------- torch


def torch_lenet5(torch_nn):
    """fastcnn.models.LeNet5's layers, names and shapes in torch.nn."""
    return torch_nn.Sequential(
        OrderedDict(
            [
                ("conv1", torch_nn.Conv2d(1, 6, 5, padding=2)),
                ("act1", torch_nn.ReLU()),
                ("pool1", torch_nn.MaxPool2d(2)),
                ("conv2", torch_nn.Conv2d(6, 16, 5)),
                ("act2", torch_nn.ReLU()),
                ("pool2", torch_nn.MaxPool2d(2)),
                ("flatten", torch_nn.Flatten()),
                ("fc1", torch_nn.Linear(400, 120)),
                ("act3", torch_nn.ReLU()),
                ("fc2", torch_nn.Linear(120, 84)),
                ("act4", torch_nn.ReLU()),
                ("fc3", torch_nn.Linear(84, 10)),
            ]
        )
    )


class TorchRun:
    """The same network, initial weights, optimizer and schedule in PyTorch."""

    name = "torch"

    def __init__(self, args, initial_state):
        import torch

        self.torch = torch
        if args.model == "resnet20":
            sys.path.insert(
                0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
            )
            from torch_twins import torch_resnet20

            self.model = torch_resnet20(torch, num_classes=10, in_channels=1)
        else:
            self.model = torch_lenet5(torch.nn)
        self.model.load_state_dict(
            {k: torch.from_numpy(v.copy()) for k, v in initial_state.items()}
        )
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.optimizer = make_optimizer(torch.optim, self.model.parameters(), args)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=args.epochs
        )

    def train_epoch(self, batches):
        torch = self.torch
        self.model.train()
        for images, labels in batches:
            loss = self.loss_fn(self.model(torch.from_numpy(images)), torch.from_numpy(labels))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()

    def test_accuracy(self, test_loader):
        torch = self.torch
        self.model.eval()
        correct = total = 0
        with torch.no_grad():
            for images, labels in test_loader:
                predicted = self.model(torch.from_numpy(images)).argmax(1).numpy()
                correct += int((predicted == labels).sum())
                total += len(labels)
        return correct / total


# ------------------------------------------------------------------------------- driver


def load_data(args):
    normalize = data.Normalize(MNIST_MEAN, MNIST_STD)
    if args.model == "resnet20":  # 32x32, the padding the normalised background
        normalize = data.Compose([normalize, data.Pad(2, fill=-MNIST_MEAN / MNIST_STD)])
    train_transform = normalize
    if args.augment:
        affine = data.RandomAffine(10, translate=(0.1, 0.1))
        train_transform = data.Compose([affine, normalize])
    train_set = data.MNIST(args.data, train=True)
    if args.limit:
        train_set = data.Subset(train_set, np.arange(min(args.limit, len(train_set))))
    test_set = data.MNIST(args.data, train=False)
    train_loader = data.DataLoader(
        train_set, args.batch_size, shuffle=True, seed=args.seed, transform=train_transform
    )
    return train_loader, data.DataLoader(test_set, 1000, transform=normalize)


def run(args):
    if args.threads is not None:
        fastcnn.set_num_threads(args.threads)
    threads = fastcnn.get_num_threads()
    train_loader, test_loader = load_data(args)
    runs = [FastcnnRun(args)]
    if args.torch:
        import torch

        torch.set_num_threads(threads)
        runs.append(TorchRun(args, runs[0].model.state_dict()))
    results = {r.name: {"epoch_seconds": [], "test_accuracy": []} for r in runs}
    for epoch in range(1, args.epochs + 1):
        # The same batches for both: materialised once, outside the timed region.
        batches = list(train_loader)
        line = [f"epoch {epoch}:"]
        for r in runs:
            started = time.perf_counter()
            r.train_epoch(batches)
            seconds = time.perf_counter() - started
            accuracy = r.test_accuracy(test_loader)
            results[r.name]["epoch_seconds"].append(seconds)
            results[r.name]["test_accuracy"].append(accuracy)
            line.append(f"{r.name} {seconds:6.1f} s, test {100 * accuracy:.2f}%")
        # With --json, stdout carries only the JSON; the progress goes to stderr.
        print("  ".join(line), file=sys.stderr if args.json else sys.stdout, flush=True)
    return summarise(args, threads, len(train_loader.dataset), results)


def summarise(args, threads, n_train, results):
    summary = {
        "benchmark": "train_mnist",
        "model": "ResNet20" if args.model == "resnet20" else "LeNet5",
        "threads": threads,
        "train_images": n_train,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "optimizer": args.optimizer,
        "augment": args.augment,
        "epochs": args.epochs,
        "target": args.target,
        "machine": platform.processor() or platform.machine(),
        "isa": fastcnn._isa.active(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "fastcnn": fastcnn.__version__,
        "results": results,
    }
    for result in results.values():
        reached = [i + 1 for i, a in enumerate(result["test_accuracy"]) if a >= args.target]
        result["epochs_to_target"] = reached[0] if reached else None
        result["final_test_accuracy"] = result["test_accuracy"][-1]
        result["median_epoch_seconds"] = float(np.median(result["epoch_seconds"]))
    if "torch" in results:
        import torch

        summary["torch"] = torch.__version__
        summary["fastcnn_speedup_vs_torch"] = (
            results["torch"]["median_epoch_seconds"] / results["fastcnn"]["median_epoch_seconds"]
        )
    return summary


def report(summary):
    images, threads = summary["train_images"], summary["threads"]
    print(f"{summary['model']} on {images} MNIST images, {threads} threads:")
    for name, result in summary["results"].items():
        reached = result["epochs_to_target"]
        print(
            f"  {name:8s} final test {100 * result['final_test_accuracy']:.2f}%, "
            f"{100 * summary['target']:.1f}% reached at epoch {reached or 'never'}, "
            f"median {result['median_epoch_seconds']:.1f} s/epoch"
        )
    if "fastcnn_speedup_vs_torch" in summary:
        print(f"  fastcnn is {summary['fastcnn_speedup_vs_torch']:.2f}x torch's speed per epoch")


def main(argv=None):
    args = parse_args(argv)
    summary = run(args)
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        print()
    else:
        report(summary)


if __name__ == "__main__":
    main()
