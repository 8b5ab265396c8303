"""What augmentation costs a LeNet-5 training epoch, and what background loading hides.

Each configuration trains fastcnn's LeNet-5 (SGD with momentum, batch 64, --threads
threads) for --batches batches of MNIST through a DataLoader, timing the whole pass
(gather, transform, forward, loss, backward, step), from ``iter(loader)`` to its last batch:

- ``none``: Normalize only (the baseline);
- ``affine``: RandomAffine(10, translate=(0.1, 0.1)) then Normalize (``fastcnn train
  --augment`` on MNIST), the batch prepared in the loader's background thread;
- ``affine-sync``: the same with ``prefetch=False``: the difference from ``affine`` is what
  the background thread hides;
- ``crop``: RandomCrop(28, padding=2) then Normalize, in the background thread.

The configurations are run alternately, round after round (after one untimed warm-up pass
each), and the median over rounds is reported, with each one's time over ``none``'s. The
transform alone (``transform ms``, one batch of 64, median of the rounds) is timed too, to
read the epoch times against. Nothing here asserts a time: the machine is noisy.

Data: the four MNIST IDX files in --data (default $FASTCNN_MNIST, else
/work/shared/datasets/mnist), else the embedded 6,000-image subset (fewer batches).
--quick runs 3 batches, one round, on the embedded subset: a check that the script works.

Run:  python bench/bench_augment.py [--threads 2] [--rounds 5] [--batches 300]
                                    [--data DIR] [--json out.json] [--quick]
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # siblings in bench/
from bench_kernels import machine_info  # noqa: E402

import fastcnn  # noqa: E402
from fastcnn import data, models, nn, optim  # noqa: E402

DEFAULT_MNIST = os.environ.get("FASTCNN_MNIST", "/work/shared/datasets/mnist")
BATCH_SIZE = 64
MNIST_NORMALIZE = data.Normalize(0.1307, 0.3081)
AUGMENTATIONS = {
    "affine": data.RandomAffine(10, translate=(0.1, 0.1)),
    "crop": data.RandomCrop(28, padding=2),
}
# name: (augmentation or None, prefetch)
CONFIGS = {
    "none": (None, True),
    "affine": ("affine", True),
    "affine-sync": ("affine", False),
    "crop": ("crop", True),
}


def training_images(directory, quick, batches):
    """The first ``batches`` batches' worth of training images (MNIST in ``directory`` if
    it is there and not --quick, else the embedded subset), and where they came from."""
    if not quick and os.path.isfile(os.path.join(directory, "train-images-idx3-ubyte.gz")):
        dataset, source = data.MNIST(directory), f"MNIST in {directory}"
    else:
        dataset, source = data.embedded_mnist(train=True), "the embedded MNIST subset"
    count = min(len(dataset), batches * BATCH_SIZE)
    return data.Subset(dataset, np.arange(count)), source


def make_pass(dataset, config, seed=0):
    """A function that trains one LeNet-5 over every batch of ``dataset`` once."""
    augmentation, prefetch = CONFIGS[config]
    transform = MNIST_NORMALIZE
    if augmentation is not None:
        transform = data.Compose([AUGMENTATIONS[augmentation], MNIST_NORMALIZE])
    loader = data.DataLoader(
        dataset, BATCH_SIZE, shuffle=True, seed=seed, transform=transform, prefetch=prefetch
    )
    model = models.LeNet5(rng=seed)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def train_pass():
        for images, labels in loader:
            loss_fn(model(images), labels)
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()

    return train_pass


def median_seconds(fn, rounds):
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(args):
    dataset, source = training_images(args.data, args.quick, args.batches)
    batches = -(-len(dataset) // BATCH_SIZE)
    print(f"LeNet-5, batch {BATCH_SIZE}, {batches} batches of {source}, {args.threads} threads")
    passes = {name: make_pass(dataset, name) for name in CONFIGS}
    for train_pass in passes.values():
        train_pass()  # warm-up: allocations, thread pools, compiled plans
    samples = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, train_pass in passes.items():  # alternately: drifts hit every config
            time.sleep(0.2)  # let the previous pass's threads stop spinning
            start = time.perf_counter()
            train_pass()
            samples[name].append(time.perf_counter() - start)
    images, _ = dataset.gather(np.arange(BATCH_SIZE))
    rng = np.random.default_rng(0)
    rows = []
    baseline = statistics.median(samples["none"])
    for name, (augmentation, prefetch) in CONFIGS.items():
        seconds = statistics.median(samples[name])
        transform_ms = None
        if augmentation is not None:
            transform = AUGMENTATIONS[augmentation]
            transform_ms = 1e3 * median_seconds(lambda t=transform: t(images, rng), args.rounds)
        rows.append(
            {
                "config": name,
                "prefetch": prefetch,
                "batches": batches,
                "epoch_s": seconds,
                "ms_per_batch": 1e3 * seconds / batches,
                "ratio_to_none": seconds / baseline,
                "transform_ms": transform_ms,
            }
        )
    return rows


def table(rows):
    lines = [
        "| config | prefetch | s per pass | ms per batch | time / none | transform ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        transform = "-" if row["transform_ms"] is None else f"{row['transform_ms']:.2f}"
        lines.append(
            f"| {row['config']} | {row['prefetch']} | {row['epoch_s']:.2f} | "
            f"{row['ms_per_batch']:.1f} | {row['ratio_to_none']:.3f} | {transform} |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="rounds (median taken)")
    parser.add_argument("--batches", type=int, default=300, help="batches per pass")
    parser.add_argument("--data", default=DEFAULT_MNIST, help="directory of the MNIST files")
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--quick", action="store_true", help="3 batches, 1 round, embedded")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.batches = 1, 3
    fastcnn.set_num_threads(args.threads)
    info = machine_info(None, args.threads)
    rows = run(args)
    print("\n".join(table(rows)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
