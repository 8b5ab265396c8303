"""What tests/test_distributed.py runs under ``mpiexec -n N python mpi_worker.py MODE OUT``.

Also imported by that test (``build``, ``loaders``) so that its one-process replay
(``fit(..., accumulate=N)``) trains exactly the model and data the ranks train.
"""

import json
import os
import signal
import sys

import numpy as np

from fastcnn import data, distributed, nn, optim, train

BATCH = 8
IMAGES = 26  # 3 full batches and one of 2: at 4 ranks, two ranks get an empty block


def build():
    """A small network with a BatchNorm (per-rank statistics) and no Dropout."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=0),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5, rng=1),
    )


def images_and_labels(nan_at=None):
    rng = np.random.default_rng(5)
    images = rng.standard_normal((IMAGES, 1, 8, 8)).astype(np.float32)
    if nan_at is not None:
        images[nan_at] = np.nan
    return images, rng.integers(0, 5, IMAGES)


def loaders(shard=None, nan_at=None):
    dataset = data.ArrayDataset(*images_and_labels(nan_at))
    train_loader = data.DataLoader(dataset, BATCH, shuffle=True, seed=3, shard=shard)
    return train_loader, data.DataLoader(dataset, 10)


def optimizer(parameters):
    return optim.SGD(parameters, lr=0.1, momentum=0.9)


class CheckedSGD(optim.SGD):
    """SGD that checks, after each step, that every rank holds the same parameters."""

    def __init__(self, parameters, comm):
        super().__init__(parameters, lr=0.1, momentum=0.9)
        self.comm, self.steps = comm, 0

    def step(self):
        super().step()
        self.steps += 1
        mine = b"".join(p.data.tobytes() for group in self.param_groups for p in group["params"])
        if len(set(self.comm.allgather(mine))) != 1:
            raise AssertionError(f"parameters differ between ranks after step {self.steps}")


def run_train(out):
    from mpi4py import MPI

    model = distributed.DistributedDataParallel(build())
    rank, size = model.rank, model.world_size
    opt = CheckedSGD(model.parameters(), MPI.COMM_WORLD)
    try:
        train.fit(model, nn.CrossEntropyLoss(), opt, loaders()[0], progress=False)
    except ValueError as error:  # an unsharded loader is refused
        assert "shard=" in str(error), error
    else:
        raise AssertionError("fit accepted an unsharded loader")
    train_loader, val_loader = loaders(shard=(rank, size))
    try:
        train.fit(model, nn.CrossEntropyLoss(), opt, train_loader, accumulate=2)
    except ValueError as error:  # the ranks already split each batch
        assert "accumulate=2 with a DistributedDataParallel model" in str(error), error
    else:
        raise AssertionError("fit accepted accumulate=2 on ranks")
    history = train.fit(
        model, nn.CrossEntropyLoss(), opt, train_loader, val_loader, epochs=2,
        progress=False, checkpoint=os.path.join(out, "checkpoint.npz"),
    )  # fmt: skip
    # after the validation pass every rank holds rank 0's BatchNorm statistics
    buffers = b"".join(b.tobytes() for b in model.buffers())
    assert len(set(MPI.COMM_WORLD.allgather(buffers))) == 1, "buffers differ between ranks"
    if rank == 0:
        np.savez(os.path.join(out, "weights.npz"), **model.module.state_dict())
        with open(os.path.join(out, "history.json"), "w") as file:
            json.dump({"epochs": history.epochs, "steps": opt.steps}, file)


def run_non_finite(out):
    """Rank 1 alone sees a NaN image in the second batch: every rank must stop there."""
    size, rank = distributed.get_world_size(), distributed.get_rank()
    order = loaders()[0].order(0)
    nan_at = int(order[BATCH + BATCH - 1])  # the last item of batch 2: rank size - 1's block
    model = distributed.DistributedDataParallel(build())
    try:
        train.fit(
            model, nn.CrossEntropyLoss(), optimizer(model.parameters()),
            loaders(shard=(rank, size), nan_at=nan_at)[0], progress=False,
        )  # fmt: skip
    except train.NonFiniteLossError as error:
        print(f"rank {rank} stopped at epoch {error.epoch} batch {error.batch}", flush=True)


def main():
    mode, out = sys.argv[1], sys.argv[2]
    distributed.init()
    rank = distributed.get_rank()
    if mode == "train":
        run_train(out)
    elif mode == "non-finite":
        run_non_finite(out)
    elif mode in ("kill", "raise"):
        if rank == 1:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError("rank 1 failed on purpose")
        from mpi4py import MPI

        MPI.COMM_WORLD.barrier()  # would wait for ever without the abort
    elif mode == "threads":
        import fastcnn

        print(f"rank {rank} threads {fastcnn.get_num_threads()}", flush=True)


if __name__ == "__main__":
    main()
