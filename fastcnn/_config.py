"""fastcnn.show_config(): how this copy of fastcnn was built and what it runs on."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np

from fastcnn import _isa, _memory, _openmp_env
from fastcnn._blas import blas_info
from fastcnn._openmp import DEBUG_CYTHON, OPENMP_ENABLED, openmp_library
from fastcnn._threads import get_num_threads
from fastcnn._version import __version__


def openmp_runtime() -> str | None:
    """Path of the OpenMP runtime the kernels are bound to, or None.

    Asked of the dynamic linker (where the kernels' omp_get_max_threads lives), not of the
    list of loaded runtimes: with PyTorch imported first there are two, and the kernels may
    be bound to PyTorch's. threadpoolctl's first OpenMP library is the fallback elsewhere.
    """
    path = openmp_library()
    if path:
        return os.path.realpath(path)
    from threadpoolctl import threadpool_info

    paths: list[str] = [lib["filepath"] for lib in threadpool_info() if lib["user_api"] == "openmp"]
    return paths[0] if paths else None


def config() -> dict[str, Any]:
    """The facts show_config prints, as a dict."""
    return {
        "fastcnn": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "openmp": OPENMP_ENABLED,
        "openmp_runtime": openmp_runtime() if OPENMP_ENABLED else None,
        "openmp_wait_policy": _openmp_env.wait_policy if OPENMP_ENABLED else None,
        "debug_cython": DEBUG_CYTHON,
        "memory": _memory.state,
        "kernel_isa": _isa.describe(),
        "kernel_blas": blas_info(),
        "num_threads": get_num_threads(),
    }


def show_config() -> None:
    """Print version, OpenMP on/off and its runtime, the kernels' BLAS and the thread count."""
    info = config()
    print(f"fastcnn {info['fastcnn']}  (python {info['python']}, numpy {info['numpy']})")
    print(f"platform:        {info['platform']}")
    openmp = "on" if info["openmp"] else "off (serial build: kernels use one thread)"
    print(f"OpenMP:          {openmp}")
    if info["openmp"]:
        print(f"OpenMP runtime:  {info['openmp_runtime'] or 'not found'}")
        print(f"OpenMP waiting:  {info['openmp_wait_policy']}")
    for blas in info["kernel_blas"]:
        print(
            f"kernel BLAS:     {blas.get('internal_api')} {blas.get('version')} "
            f"({blas.get('architecture')}, {blas.get('threading_layer')}) "
            f"{blas.get('filepath')}  [held at 1 thread inside kernels]"
        )
    print(f"kernel ISA:      {info['kernel_isa']}")
    print(f"memory:          {info['memory']}")
    print(f"threads:         {info['num_threads']}")
    print(f"debug checks:    {'on' if info['debug_cython'] else 'off'}")
