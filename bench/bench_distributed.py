"""Data-parallel LeNet-5 training on MPI ranks of one machine: what communication costs.

Two measures (issue 16), each a separate ``mpiexec`` run of this script, one kernel thread
per rank (``OMP_NUM_THREADS=1``, ``UCX_TLS=self,sm``), random MNIST-shaped data:

1. At global batch 256 on 2 ranks: the time per step spent communicating (the gradient
   reduction plus the loss/accuracy tally), against the whole step, for the deterministic
   gather-and-sum-in-rank-order reduction and for a plain ``MPI_Allreduce``.
2. The scaling of a cluster simulated on this machine: 4 ranks x 1 thread against 1 process
   x 1 thread on the same global batch (per-step medians).

On a machine with fewer cores than ranks the ranks share cores and the scaling says little;
the script prints the core count next to the figures.

    python bench/bench_distributed.py [--steps 20] [--batch 256]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.abspath(__file__)


def _worker(batch, steps, reduction):
    """Runs on every rank: ``steps`` timed training steps (after 3 warm-up steps)."""
    from mpi4py import MPI

    from fastcnn import distributed, models, nn, optim
    from fastcnn._data_parallel import block_bounds
    from fastcnn.train.loop import _Tally
    from fastcnn.train.metrics import metric_functions
    from fastcnn.train.parallel import sharded_step

    distributed.init(num_threads=1)
    model = distributed.DistributedDataParallel(models.LeNet5(), reduction=reduction)
    rank, size = model.rank, model.world_size
    start, stop = block_bounds(batch, size)[rank]
    rng = np.random.default_rng(rank)
    images = rng.standard_normal((stop - start, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, stop - start)
    loss_fn, opt = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    # time the two collectives of a step by wrapping them
    spent = [0.0]
    for name in ("reduce_gradients", "sum_in_rank_order"):
        method = getattr(model, name)

        def timed(*args, _method=method):
            began = time.perf_counter()
            try:
                return _method(*args)
            finally:
                spent[0] += time.perf_counter() - began

        object.__setattr__(model, name, timed)
    step_times, comm_times = [], []
    for step in range(3 + steps):
        MPI.COMM_WORLD.Barrier()
        spent[0] = 0.0
        began = time.perf_counter()
        sharded_step(model, loss_fn, opt, images, labels, _Tally(metric_functions(["accuracy"])))
        if step >= 3:
            step_times.append(time.perf_counter() - began)
            comm_times.append(spent[0])
    # the collectives alone, every rank ready (the in-step time also holds the wait for a
    # slower rank)
    alone = []
    row = np.zeros(3)
    for _ in range(steps):
        MPI.COMM_WORLD.Barrier()
        spent[0] = 0.0
        model.reduce_gradients()
        model.sum_in_rank_order(row)
        alone.append(spent[0])
    # the slowest rank sets the pace: the maximum over ranks of each median
    result = {
        name: MPI.COMM_WORLD.allreduce(statistics.median(times), op=MPI.MAX)
        for name, times in (("step", step_times), ("comm", comm_times), ("alone", alone))
    }
    if rank == 0:
        print(json.dumps(result))


def _one_process(batch, steps):
    """1 process x 1 thread, the same global batch, a plain step."""
    import fastcnn
    from fastcnn import models, nn, optim

    fastcnn.set_num_threads(1)
    model = models.LeNet5()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    loss_fn, opt = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for step in range(3 + steps):
        began = time.perf_counter()
        loss = loss_fn(model(images), labels)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        assert np.isfinite(loss)
        if step >= 3:
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def _mpiexec():
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if found is None:
        sys.exit("bench_distributed: no mpiexec found (pip install 'fastcnn[mpi]')")
    return os.path.realpath(found)  # Hydra finds its proxy next to the real file


def _run_ranks(ranks, batch, steps, reduction):
    env = dict(os.environ, OMP_NUM_THREADS="1", UCX_TLS="self,sm")
    mpiexec = _mpiexec()
    # a venv seeing mpi4py through a .pth file has no libmpi under sys.prefix: use the
    # MPICH wheel's beside the mpiexec (as tests/test_distributed.py does)
    libmpi = os.path.join(os.path.dirname(os.path.dirname(mpiexec)), "lib", "libmpi.so.12")
    if "MPI4PY_LIBMPI" not in env and os.path.exists(libmpi):
        env["MPI4PY_LIBMPI"] = libmpi
    command = [mpiexec, "-n", str(ranks), sys.executable, HERE, "--worker", reduction]
    command += ["--batch", str(batch), "--steps", str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        sys.exit(f"bench_distributed: {' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.batch, args.steps, args.worker)
        return
    print(f"LeNet-5, global batch {args.batch}, {args.steps} steps, {os.cpu_count()} cores")
    for reduction in ("gather", "allreduce"):
        two = _run_ranks(2, args.batch, args.steps, reduction)
        print(f"2 ranks x 1 thread, {reduction:9}: {_times(two)}")
    one = _one_process(args.batch, args.steps)
    four = _run_ranks(4, args.batch, args.steps, "gather")
    print(f"1 process x 1 thread:         step {1e3 * one:7.2f} ms")
    print(f"4 ranks x 1 thread, gather   : {_times(four)}")
    print(f"4 ranks vs 1 process: {one / four['step']:.2f}x faster per step")


def _times(run):
    step, comm, alone = (1e3 * run[k] for k in ("step", "comm", "alone"))
    return (
        f"step {step:7.2f} ms, collectives in the step {comm:6.3f} ms "
        f"({100 * comm / step:.1f}%, with the wait for the slower rank), "
        f"alone {alone:6.3f} ms ({100 * alone / step:.1f}%)"
    )


if __name__ == "__main__":
    main()
