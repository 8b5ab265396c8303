"""Data-parallel training over MPI ranks (``mpiexec -n 4 fastcnn train``), in PyTorch's words.

``init()`` starts MPI (through mpi4py, the ``mpi`` extra), ``DistributedDataParallel(model)``
keeps every rank's copy of the model equal: rank 0's parameters and buffers at construction,
and after each backward the gradients averaged over the ranks. A loader made with
``DataLoader(..., shard=(get_rank(), get_world_size()))`` gives each rank its block of every
global batch.

Deterministic by default: the ranks' flat gradients are gathered to every rank and summed in
rank order, so N ranks give the bits of one process running ``fit(..., accumulate=N)`` (a
plain ``MPI_Allreduce`` is not bit-stable across rank counts); ``reduction="allreduce"`` is
the faster option at scale.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._data_parallel import GradientBuffers, ordered_mean, ordered_sum
from fastcnn._threads import default_num_threads, set_num_threads
from fastcnn._validation import instance_of
from fastcnn.nn.module import Module

__all__ = [
    "DistributedDataParallel",
    "get_rank",
    "get_world_size",
    "init",
    "is_initialized",
    "launched_world_size",
]

# What launchers tell their processes about the job's size: MPICH/Intel MPI (Hydra), Open MPI,
# Slurm's srun (a job step; SLURM_NTASKS alone is also set in a plain batch script).
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
# ... and about the processes on this node (MPICH's Hydra): more than one also means a job
LAUNCHER_LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
REDUCTIONS = ("gather", "allreduce")

_initialized = False


def _mpi() -> Any:
    """mpi4py's MPI module (which initialises MPI on first import)."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            "fastcnn.distributed needs mpi4py: pip install 'fastcnn[mpi]' (mpi4py and the "
            "MPICH wheel), or on a cluster pip install mpi4py to use the cluster's MPI "
            f"({error})"
        ) from None
    except RuntimeError as error:  # mpi4py found no libmpi to load
        first_line = str(error).splitlines()[0]
        raise ImportError(
            f"fastcnn.distributed: mpi4py could not load an MPI library ({first_line}): "
            "pip install 'fastcnn[mpi]' for the MPICH wheel, or set MPI4PY_LIBMPI to the "
            "path of your MPI's libmpi.so"
        ) from None
    return MPI


def launched_world_size() -> int | None:
    """The number of processes the launcher (mpiexec, srun) says the job has, or None
    when no launcher variable is set (a plain ``python`` run)."""
    for name in LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def _check_not_singletons(world_size: int) -> None:
    """N ranks that each see a world of size 1 would train N separate models in silence:
    the launcher belongs to another MPI than the one mpi4py loaded."""
    if world_size != 1:
        return
    for name in LAUNCHER_SIZE_VARIABLES + LAUNCHER_LOCAL_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            raise RuntimeError(
                f"fastcnn.distributed.init: the launcher started {value} processes "
                f"({name}={value}) but MPI sees a world of size 1 in each: the mpiexec "
                "belongs to another MPI than the one mpi4py loaded. Use the mpiexec of the "
                f"same MPI ({os.path.join(os.path.dirname(sys.executable), 'mpiexec')} "
                "for the mpich wheel), or point MPI4PY_LIBMPI at the launcher's libmpi"
            )


def _threads_per_rank(mpi: Any) -> int:
    """The node's cores divided by the ranks on this node (at least 1), capped by the
    default (which honours OMP_NUM_THREADS and the CPUs this process may use)."""
    node = mpi.COMM_WORLD.Split_type(mpi.COMM_TYPE_SHARED)
    try:
        ranks_on_node = node.Get_size()
    finally:
        node.Free()
    return max(1, min(default_num_threads(), (os.cpu_count() or 1) // ranks_on_node))


def _abort_on_uncaught_exception(mpi: Any) -> None:
    """One rank's uncaught exception aborts the whole job (as ``python -m mpi4py`` does),
    instead of leaving the other ranks waiting in a collective for ever."""
    previous = sys.excepthook

    def abort(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        try:
            traceback.print_exception(kind, value, tb)
            sys.stderr.flush()
        finally:
            mpi.COMM_WORLD.Abort(1)
        previous(kind, value, tb)  # reached only if Abort returns

    sys.excepthook = abort


def init(num_threads: int | None = None) -> None:
    """Start MPI for data-parallel training; calling it again does nothing.

    Refuses (RuntimeError) to run as N separate jobs of size 1 when the launcher started N
    processes but MPI sees one (an mpiexec of another MPI). Sets the kernel threads of each
    rank to ``num_threads``, by default the node's cores divided by the ranks on the node
    (2 ranks x 2 threads on 2 cores ran 4.6x slower than 1 thread each). On more than one
    rank, an uncaught exception on any rank aborts the job (``MPI_Abort``).
    """
    global _initialized
    if _initialized:
        return
    mpi = _mpi()
    world_size = mpi.COMM_WORLD.Get_size()
    _check_not_singletons(world_size)
    set_num_threads(_threads_per_rank(mpi) if num_threads is None else num_threads)
    if world_size > 1:
        _abort_on_uncaught_exception(mpi)
    _initialized = True


def is_initialized() -> bool:
    """True once ``init()`` has run in this process."""
    return _initialized


def _world() -> Any:
    if not _initialized:
        raise RuntimeError(
            "fastcnn.distributed is not initialized: call fastcnn.distributed.init() first"
        )
    return _mpi().COMM_WORLD


def get_rank() -> int:
    """This process's rank in the job (0 to world size - 1)."""
    return int(_world().Get_rank())


def get_world_size() -> int:
    """The number of processes in the job."""
    return int(_world().Get_size())


def _broadcast_from_rank0(comm: Any, arrays: Sequence[NDArray[Any]]) -> None:
    """Overwrite ``arrays`` (in place) with rank 0's: one broadcast per dtype."""
    by_dtype: dict[np.dtype[Any], list[NDArray[Any]]] = {}
    for array in arrays:
        by_dtype.setdefault(array.dtype, []).append(array)
    for dtype, group in by_dtype.items():
        flat = np.concatenate([np.ravel(a) for a in group]).astype(dtype, copy=False)
        comm.Bcast(flat, root=0)
        offset = 0
        for array in group:
            array[...] = flat[offset : offset + array.size].reshape(array.shape)
            offset += array.size


class DistributedDataParallel(Module):
    """Wrap ``module`` so that every rank's copy trains as one model (torch's DDP).

    At construction, rank 0's parameters and buffers are broadcast to every rank. Calling the
    wrapper calls ``module`` (first broadcasting rank 0's buffers, as torch's
    ``broadcast_buffers=True``); ``backward`` runs ``module.backward`` and then averages the
    gradients over the ranks: one flat buffer per dtype, summed over the ranks and divided
    by the world size.

    Parameters
    ----------
    module : Module
        The model; every rank builds it the same way (rank 0's values win anyway).
    reduction : {"gather", "allreduce"}
        ``"gather"`` (default): every rank gathers all ranks' buffers (``Allgather``) and adds
        them in rank order, so the result has the bits of one process adding the blocks in
        order (``fit(..., accumulate=N)``) for any rank count. ``"allreduce"``: one
        ``MPI_Allreduce``, faster at scale but its sums depend on MPI's order.
    broadcast_buffers : bool
        Give every rank rank 0's buffers (BatchNorm's running statistics) at each call.

    Notes
    -----
    BatchNorm uses each rank's own batch statistics (no SyncBatchNorm), as torch's DDP;
    the running statistics are rank 0's (broadcast at each call), which checkpoints save.
    Dropout draws the same masks on every rank when every rank built the model with the same
    seed. ``state_dict()`` prefixes ``module.`` as torch's DDP does; ``fit`` checkpoints the
    unwrapped ``module``, so a checkpoint loads without MPI.
    """

    def __init__(
        self, module: Module, reduction: str = "gather", broadcast_buffers: bool = True
    ) -> None:
        super().__init__()
        instance_of(module, "module", "DistributedDataParallel", Module, "a fastcnn.nn.Module")
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"DistributedDataParallel: reduction must be 'gather' (deterministic) or "
                f"'allreduce', got {reduction!r}"
            )
        self.module = module
        self.reduction = reduction
        self.broadcast_buffers = bool(broadcast_buffers)
        self._comm = _world()
        self.rank, self.world_size = self._comm.Get_rank(), self._comm.Get_size()
        self._gradients = GradientBuffers(module.parameters())
        _broadcast_from_rank0(self._comm, [p.data for p in module.parameters()])
        self._sync_buffers()

    def _sync_buffers(self) -> None:
        buffers = [b for b in self.module.buffers() if b is not None]
        if buffers and self.world_size > 1:
            _broadcast_from_rank0(self._comm, buffers)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.broadcast_buffers:
            self._sync_buffers()
        return self.module(*args, **kwargs)

    def backward(self, grad_output: ArrayLike, input_grad: bool = False) -> NDArray[Any] | None:
        """``module.backward(grad_output, input_grad)``, then ``reduce_gradients()``."""
        result = self.module.backward(grad_output, input_grad=input_grad)
        self.reduce_gradients()
        return result

    def reduce_gradients(self) -> None:
        """Replace every rank's gradients by their mean over the ranks.

        Collective: every rank calls it once per step, a rank without data (an empty block
        of a last small batch) with zero (or None) gradients.
        """
        flats = self._gradients.flatten()
        if self.reduction == "allreduce":
            mpi = _mpi()
            for flat in flats:
                self._comm.Allreduce(mpi.IN_PLACE, flat, op=mpi.SUM)
                flat /= flat.dtype.type(self.world_size)
            self._gradients.assign(flats)
        else:
            self._gradients.assign([ordered_mean(self.gather(flat)) for flat in flats])

    def gather(self, array: NDArray[Any]) -> NDArray[Any]:
        """Every rank's ``array`` (same shape and dtype on each), stacked in rank order."""
        array = np.ascontiguousarray(array)
        stacked = np.empty((self.world_size, *array.shape), dtype=array.dtype)
        self._comm.Allgather(array, stacked)
        return stacked

    def sum_in_rank_order(self, array: NDArray[Any]) -> NDArray[Any]:
        """The sum over the ranks of ``array``, added in rank order (the same on every rank)."""
        return ordered_sum(self.gather(array))

    def extra_repr(self) -> str:
        return f"world_size={self.world_size}, reduction={self.reduction!r}"
