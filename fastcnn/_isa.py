"""Which ISA copy of the C convolution kernels runs: the best the CPU has, capped by
``FASTCNN_MAX_CPU_ISA``; and the vector length the Python side packs weights for.

The kernels (csrc/direct_conv.h) are compiled once per instruction set, each copy with its
own vector width and register tiles: ``avx512`` (32 x 512-bit registers), ``avx2`` (AVX2 +
FMA, 16 x 256-bit), ``baseline`` (SSE2 on x86-64, NEON on ARM64: 128-bit) and
``portable`` (plain C, for compilers without GCC's vector extensions). At import the
best copy this CPU runs is selected, no better than ``FASTCNN_MAX_CPU_ISA`` if that is set
(oneDNN's ``ONEDNN_MAX_CPU_ISA`` is the model): ``FASTCNN_MAX_CPU_ISA=avx2`` makes an
AVX-512 machine run what an AVX2 laptop runs. ``show_config()`` names the copy.

Every extension module that includes the kernels holds its own pointer to the copy it
calls; this module is the one place that sets them, so they always agree.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from numpy.typing import DTypeLike

import fastcnn._conv as _conv
import fastcnn._fused as _fused
import fastcnn._network as _network

ENV_VAR = "FASTCNN_MAX_CPU_ISA"
# names as FASTCNN_MAX_CPU_ISA takes them, by level (csrc/cpu_dispatch.h's FASTCNN_ISA_*)
LEVELS = {"portable": 0, "baseline": 1, "avx2": 2, "avx512": 3}
_KERNEL_MODULES = (_conv, _fused, _network)


class _Copy(NamedTuple):
    """The copy of the kernels every kernel module runs."""

    name: str
    level: int
    vector_length: dict[int, int]  # itemsize -> VL
    group_width: dict[int, int]  # itemsize -> GW


_active: _Copy  # set by use(), called at the end of this module


def _parse_cap(value: str | None) -> str:
    """The copy FASTCNN_MAX_CPU_ISA names (case-insensitive); "avx512", the best there is,
    when it is unset or empty."""
    if value is None or not value.strip():
        return "avx512"
    name = value.strip().lower()
    if name not in LEVELS:
        raise ValueError(
            f"{ENV_VAR}={value!r} is not an instruction set fastcnn knows: use one of "
            f"{', '.join(sorted(LEVELS, key=LEVELS.__getitem__, reverse=True))} (or unset it for "
            f"the best this CPU has)"
        )
    return name


def use(max_isa: str) -> str:
    """Run every kernel on the best copy the CPU has of at most ``max_isa`` (a name of
    LEVELS); return the name of the copy selected. Not while kernels run (tests call it
    between calls, to check every copy in one process)."""
    global _active
    if max_isa not in LEVELS:
        raise ValueError(f"max_isa must be one of {sorted(LEVELS)}, got {max_isa!r}")
    selected = {module.select_kernel_isa(LEVELS[max_isa]) for module in _KERNEL_MODULES}
    ((name, level, vl_f32, gw_f32, vl_f64, gw_f64),) = selected  # one copy in every module
    _active = _Copy(name, level, {4: vl_f32, 8: vl_f64}, {4: gw_f32, 8: gw_f64})
    return name


def active() -> str:
    """The name of the copy the kernels run: 'avx512', 'avx2', 'baseline' or 'portable'."""
    return _active.name


def available() -> list[str]:
    """The names of the copies this CPU can run, best first."""
    best = _conv.cpu_isa_level()
    return [name for name, level in sorted(LEVELS.items(), key=lambda kv: -kv[1]) if level <= best]


def vector_length(dtype: DTypeLike) -> int:
    """Values of ``dtype`` per vector register in the copy that runs (VL): the unit the
    kernels' packed weights and method choices are in."""
    return _active.vector_length[np.dtype(dtype).itemsize]


def group_width(dtype: DTypeLike) -> int:
    """Filters per block of the filter kernel's blocked operands in the copy that runs
    (GW: its wide tile's filter vectors times VL; csrc/direct_conv.h)."""
    return _active.group_width[np.dtype(dtype).itemsize]


def describe() -> str:
    """The ``kernel ISA:`` line of show_config."""
    cap = os.environ.get(ENV_VAR)
    capped = f"{ENV_VAR}={cap}" if cap and cap.strip() else f"{ENV_VAR} unset"
    return f"{active()} (this CPU runs: {', '.join(available())}; {capped})"


use(_parse_cap(os.environ.get(ENV_VAR)))
