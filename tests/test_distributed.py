"""Data-parallel training on MPI: ``mpiexec -n 2`` and ``-n 4`` runs of tests/mpi_worker.py
and of ``fastcnn train``, against one process with ``accumulate=N``.

Each run is a subprocess with a timeout, so a hang fails the test instead of CI. They use
one kernel thread per rank and ``UCX_TLS=self,sm`` (MPICH stays off the network
interfaces). Skipped, with the reason, without mpi4py or an ``mpiexec``.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastcnn
from fastcnn import distributed, nn, train
from fastcnn.cli import main as cli_main

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mpi_worker.py")
PACKAGE_PARENT = os.path.dirname(os.path.dirname(fastcnn.__file__))
# The CLI runs: a few steps of LeNet-5 on the embedded MNIST subset
CLI_TRAIN = ["--limit", "90", "--epochs", "1", "--batch-size", "30", "--no-progress"]
CLI_TRAIN += ["--schedule", "none"]  # so that one epoch and a resumed second are two epochs


def _find_mpiexec():
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    # Hydra finds its proxy next to the real file, not next to a symlink to it
    return None if found is None else os.path.realpath(found)


MPIEXEC = _find_mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="needs mpi4py and an mpiexec (pip install 'fastcnn[mpi]')",
)


def _libmpi_of_mpiexec():
    """The MPICH wheel's libmpi beside MPIEXEC, for a venv that sees mpi4py through a .pth
    file (tools/debug_build_tests.sh's): mpi4py looks for libmpi under sys.prefix only."""
    if MPIEXEC is None or "MPI4PY_LIBMPI" in os.environ:
        return {}
    libmpi = os.path.join(os.path.dirname(os.path.dirname(MPIEXEC)), "lib", "libmpi.so.12")
    return {"MPI4PY_LIBMPI": libmpi} if os.path.exists(libmpi) else {}


def _env(**extra):
    return dict(
        os.environ, OMP_NUM_THREADS="1", UCX_TLS="self,sm", PYTHONPATH=PACKAGE_PARENT,
        **_libmpi_of_mpiexec(), **extra,
    )  # fmt: skip


def mpirun(ranks, *command, timeout=60, **popen):
    """``mpiexec -n RANKS COMMAND`` (COMMAND may hold ':'-separated MPMD blocks)."""
    return subprocess.run(
        [MPIEXEC, "-n", str(ranks), *map(str, command)],
        capture_output=True, text=True, timeout=timeout, env=_env(), check=False, **popen,
    )  # fmt: skip


def worker(ranks, mode, out, timeout=60):
    return mpirun(ranks, sys.executable, WORKER, mode, out, timeout=timeout)


def _worker_module():
    """tests/mpi_worker.py, imported (the tests directory is no package)."""
    sys.path.insert(0, HERE)
    try:
        import mpi_worker
    finally:
        sys.path.remove(HERE)
    return mpi_worker


def replay(blocks, epochs=2):
    """One process, each batch in ``blocks`` blocks: what N ranks must reproduce."""
    mpi_worker = _worker_module()
    model = mpi_worker.build()
    train_loader, val_loader = mpi_worker.loaders()
    history = train.fit(
        model, nn.CrossEntropyLoss(), mpi_worker.optimizer(model.parameters()), train_loader,
        val_loader, epochs=epochs, progress=False, accumulate=blocks,
    )  # fmt: skip
    return model, history


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_ranks_give_the_bits_of_accumulate(ranks, tmp_path):
    result = worker(ranks, "train", tmp_path)
    assert result.returncode == 0, result.stderr
    # the worker's SGD checked after each step that every rank held the same parameters,
    # and after fit that every rank held rank 0's BatchNorm statistics
    saved = np.load(tmp_path / "weights.npz")
    record = json.loads((tmp_path / "history.json").read_text())
    model, history = replay(ranks)
    assert record["steps"] == 2 * 4
    for name, param in model.named_parameters():
        np.testing.assert_array_equal(saved[name], param.data, err_msg=name)
    # the tally is added in block order too: the same training history. Not the same
    # validation: the ranks' BatchNorm statistics are rank 0's blocks', the replay's all blocks'
    for ours, theirs in zip(record["epochs"], history.epochs, strict=True):
        assert {k: v for k, v in ours.items() if k.startswith("train_")} == {
            k: v for k, v in theirs.items() if k.startswith("train_")
        }
    # the checkpoint holds the unwrapped model (no "module." prefix): rank 0's buffers
    state = train.load_checkpoint(tmp_path / "checkpoint.npz")
    assert sorted(state["model"]) == sorted(model.state_dict())
    for name in ("1.running_mean", "1.running_var"):
        np.testing.assert_array_equal(state["model"][name], saved[name])


def test_accumulate_averages_the_blocks_gradients():
    """Equal blocks: the mean of the block means is the batch mean, so one step with
    accumulate=2 is (to rounding) one step on the whole batch."""
    mpi_worker = _worker_module()
    results = []
    for blocks in (1, 2):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5, rng=1))
        images, labels = mpi_worker.images_and_labels()
        loader = fastcnn.data.DataLoader(fastcnn.data.ArrayDataset(images[:8], labels[:8]), 8)
        opt = fastcnn.optim.SGD(model.parameters(), lr=0.5)
        train.fit(model, nn.CrossEntropyLoss(), opt, loader, progress=False, accumulate=blocks)
        results.append(model[1].weight.data.copy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)


@needs_mpi
def test_a_non_finite_loss_on_one_rank_stops_every_rank_together(tmp_path):
    result = worker(2, "non-finite", tmp_path)
    assert result.returncode == 0, result.stderr
    stops = re.findall(r"rank \d stopped at epoch \d+ batch \d+", result.stdout)
    assert sorted(stops) == [
        "rank 0 stopped at epoch 1 batch 2",
        "rank 1 stopped at epoch 1 batch 2",
    ], result.stdout


@needs_mpi
@pytest.mark.parametrize("mode", ["kill", "raise"])
def test_a_failing_rank_ends_the_job_within_10_s(mode, tmp_path):
    started = time.monotonic()
    result = worker(2, mode, tmp_path, timeout=10)  # a hang raises TimeoutExpired
    assert time.monotonic() - started < 10
    assert result.returncode != 0
    if mode == "raise":
        assert "rank 1 failed on purpose" in result.stderr


@needs_mpi
def test_threads_are_the_node_cores_shared_by_its_ranks(tmp_path):
    env = {k: v for k, v in _env().items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run(
        [MPIEXEC, "-n", "2", sys.executable, WORKER, "threads", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # OpenMP's default without OMP_NUM_THREADS: the CPUs this process may use
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    expected = max(1, min(usable, (os.cpu_count() or 1) // 2))
    # (mpiexec may interleave the ranks' lines)
    assert re.findall(r"rank \d threads (\d+)", result.stdout) == [str(expected)] * 2


@needs_mpi
def test_launcher_of_another_mpi_is_refused():
    """An Open MPI mpiexec starting an MPICH mpi4py: N singletons, each of size 1."""
    code = "from fastcnn import distributed; distributed.init()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, env=_env(OMPI_COMM_WORLD_SIZE="2"),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "OMPI_COMM_WORLD_SIZE=2" in result.stderr and "world of size 1" in result.stderr


@needs_mpi
def test_cli_rank_0_alone_prints_and_writes_resumes_and_matches_accumulate(tmp_path):
    """Rank 1 runs in its own directory: its --out stays empty. Resumed from rank 0's
    checkpoint for a second epoch, the weights are those of two epochs of `fastcnn train
    --accumulate 2` in one process."""
    rank0, rank1 = tmp_path / "rank0", tmp_path / "rank1"
    rank0.mkdir(), rank1.mkdir()
    command = [sys.executable, "-m", "fastcnn", "train", *CLI_TRAIN, "--out", "run"]
    result = subprocess.run(
        [MPIEXEC, "-n", "1", "-wdir", rank0, *command, ":", "-n", "1", "-wdir", rank1, *command],
        capture_output=True, text=True, timeout=60, env=_env(), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("training LeNet5") == 1, result.stdout
    assert "2 MPI ranks" in result.stdout
    listed = ["best.npz", "checkpoint.npz", "history.json", "history.png"]
    assert sorted(os.listdir(rank0 / "run")) == listed
    assert not (rank1 / "run").exists()
    resumed = mpirun(2, *command, "--epochs", "2", "--resume", cwd=rank0)
    assert resumed.returncode == 0, resumed.stderr
    one = str(tmp_path / "one")
    assert cli_main(["train", *CLI_TRAIN, "--epochs", "2", "--accumulate", "2", "--out", one]) == 0
    ranks = train.load_checkpoint(rank0 / "run" / "checkpoint.npz")
    single = train.load_checkpoint(tmp_path / "one" / "checkpoint.npz")
    assert ranks["epoch"] == single["epoch"] == 2
    for name in single["model"]:
        np.testing.assert_array_equal(ranks["model"][name], single["model"][name], err_msg=name)


def test_without_mpi4py_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"fastcnn\[mpi\]"):
        distributed._mpi()


def test_errors_before_init():
    if distributed.is_initialized():
        pytest.skip("MPI was initialised in this process")
    with pytest.raises(RuntimeError, match=r"call fastcnn.distributed.init\(\) first"):
        distributed.get_rank()
    with pytest.raises(ValueError, match="reduction must be 'gather'.*got 'mean'"):
        distributed.DistributedDataParallel(nn.Linear(2, 2), reduction="mean")
    with pytest.raises(TypeError, match="DistributedDataParallel: module must be"):
        distributed.DistributedDataParallel(object())


@needs_mpi
def test_readme_example_runs_on_2_ranks(tmp_path):
    readme = os.path.join(os.path.dirname(HERE), "README.md")
    if not os.path.exists(readme):  # tests run from an installed wheel, outside the checkout
        pytest.skip("README.md is not beside the tests")
    blocks = re.findall(r"```python\n(.*?)```", Path(readme).read_text(), flags=re.S)
    (example,) = [block for block in blocks if "DistributedDataParallel(" in block]
    script = tmp_path / "example.py"
    script.write_text(example)
    result = mpirun(2, sys.executable, script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["ddp.npz", "example.py"]
    model = fastcnn.models.LeNet5()
    train.restore_model(tmp_path / "ddp.npz", model)  # loads without MPI


def test_launcher_variables(monkeypatch):
    for name in distributed.LAUNCHER_SIZE_VARIABLES + distributed.LAUNCHER_LOCAL_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched_world_size() is None
    distributed._check_not_singletons(1)  # a plain python run
    monkeypatch.setenv("MPI_LOCALNRANKS", "2")  # Hydra's ranks on this node
    with pytest.raises(RuntimeError, match="MPI_LOCALNRANKS=2.*world of size 1"):
        distributed._check_not_singletons(1)
    distributed._check_not_singletons(2)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    assert distributed.launched_world_size() == 8


def test_cli_refuses_accumulate_under_mpiexec(monkeypatch, capsys):
    monkeypatch.setenv("PMI_SIZE", "2")  # as Hydra's mpiexec -n 2 sets it
    assert cli_main(["train", "--accumulate", "2", "--no-progress"]) == 2
    assert "--accumulate 2 under mpiexec: the ranks already split each batch" in (
        capsys.readouterr().err
    )


@needs_mpi
def test_the_distributed_benchmark_runs(tmp_path):
    """bench/bench_distributed.py at its smallest (it measures nothing here): its ranks use
    fit's step functions, so a change of their signature must not break it unseen."""
    script = Path(__file__).resolve().parent.parent / "bench" / "bench_distributed.py"
    if not script.exists():  # tests run from an installed wheel
        pytest.skip("bench/ is not beside the tests")
    result = subprocess.run(
        [sys.executable, script, "--steps", "2", "--batch", "16"],
        capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "4 ranks vs 1 process" in result.stdout
