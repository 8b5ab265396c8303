"""Build the compiled kernels in csrc/ as private extension modules of fastcnn.

Environment switches:

FASTCNN_OPENMP=auto|0|1
    auto (default): use OpenMP if a test program compiles and links with it, else warn and
    build serial kernels. 0: build serial. 1: OpenMP is required; fail if it does not work.
FASTCNN_DEBUG_CYTHON=1
    Turn Cython's boundscheck, wraparound and initializedcheck on (slow; for tests).

There is no switch for the instruction set: the C kernels (csrc/direct_conv.h) are always
built in every copy the compiler can target (avx512, avx2, baseline, portable), and the copy
that runs is chosen at import, capped by FASTCNN_MAX_CPU_ISA (fastcnn/_isa.py).
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from typing import Any

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = [
    "_array_cache",
    "_augment",
    "_batchnorm",
    "_conv",
    "_dense",
    "_elementwise",
    "_fused",
    "_network",
    "_pool",
    "_openmp",
]

# Flags of one module only. _augment must give np.rint's pixel for every position NumPy
# computes, so each product is rounded on its own: gcc and clang would otherwise fuse
# a * b + c into an FMA (one rounding) wherever the target has one (every ARM64 CPU, x86-64
# with -march=haswell). MSVC does not contract unless asked, and takes no such flag.
MODULE_FLAGS = {"_augment": [] if sys.platform == "win32" else ["-ffp-contract=off"]}

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel num_threads(2) reduction(+:n)
        n += 1;
        return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
    }
    """
)

HOW_TO_GET_OPENMP = (
    "install an OpenMP runtime for your compiler (Debian/Ubuntu: gcc ships libgomp; "
    "clang needs libomp-dev; macOS: 'brew install libomp'), or build serial kernels "
    "with FASTCNN_OPENMP=0"
)


def openmp_flags(compiler_type: str) -> tuple[list[str], list[str]]:
    """Compile and link flags that enable OpenMP for this compiler family."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def openmp_works(compiler: Any, compile_flags: list[str], link_flags: list[str]) -> bool:
    """Compile, link and run a tiny OpenMP program: the only reliable test of the toolchain."""
    tmp = tempfile.mkdtemp(prefix="fastcnn-omp-probe-")
    try:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(OPENMP_PROBE)
        objects = compiler.compile([source], output_dir=tmp, extra_postargs=compile_flags)
        exe = os.path.join(tmp, "probe")
        # distutils passes $LDFLAGS to extension links but not to executables; the probe
        # needs them too (macOS: -L to Homebrew's keg-only libomp).
        ldflags = shlex.split(os.environ.get("LDFLAGS", ""))
        compiler.link_executable(objects, exe, extra_postargs=link_flags + ldflags)
        subprocess.run([exe], check=True, capture_output=True, timeout=60)
        return True
    except Exception:  # noqa: BLE001 - any failure means "no usable OpenMP"
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExtWithOpenMP(build_ext):
    """build_ext that decides on OpenMP once, from FASTCNN_OPENMP and a compile probe."""

    def build_extensions(self) -> None:
        mode = os.environ.get("FASTCNN_OPENMP", "auto").strip().lower()
        if mode not in ("auto", "0", "1"):
            raise SystemExit(f"FASTCNN_OPENMP must be auto, 0 or 1, got {mode!r}")
        compile_flags, link_flags = openmp_flags(self.compiler.compiler_type)
        use_openmp = False
        if mode != "0":
            use_openmp = openmp_works(self.compiler, compile_flags, link_flags)
            if not use_openmp and mode == "1":
                raise SystemExit(
                    "FASTCNN_OPENMP=1 but the compiler cannot build an OpenMP program: "
                    + HOW_TO_GET_OPENMP
                )
            if not use_openmp:
                print(
                    "WARNING: fastcnn is being built WITHOUT OpenMP (kernels will run on one "
                    f"thread). To get parallel kernels, {HOW_TO_GET_OPENMP}.",
                    file=sys.stderr,
                )
        for ext in self.extensions:
            if use_openmp:
                ext.extra_compile_args += compile_flags
                ext.extra_link_args += link_flags
        super().build_extensions()


def debug_cython() -> bool:
    return os.environ.get("FASTCNN_DEBUG_CYTHON", "0") == "1"


def extensions() -> list[Extension]:
    checks = debug_cython()
    directives = {
        "language_level": 3,
        "boundscheck": checks,
        "wraparound": checks,
        "initializedcheck": checks,
        "cdivision": True,
        "embedsignature": True,
    }
    # -O3 lets gcc vectorise the copy loops; never -march=native (wheels must run on any
    # x86-64) and never -ffast-math (it flips flush-to-zero for the whole process).
    cflags = [] if sys.platform == "win32" else ["-O3", "-Wno-unreachable-code"]
    if sysconfig.get_config_var("CC") and "clang" in sysconfig.get_config_var("CC"):
        cflags.append("-Wno-unknown-pragmas")
    exts = [
        Extension(
            f"fastcnn.{name}",
            [f"csrc/{name}.pyx"],
            include_dirs=[numpy.get_include(), "csrc"],
            depends=sorted(glob.glob("csrc/*.pxd") + glob.glob("csrc/*.h")),
            define_macros=[
                ("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
                ("FASTCNN_DEBUG_CYTHON", "1" if checks else "0"),
            ],
            extra_compile_args=cflags + MODULE_FLAGS.get(name, []),
            # dladdr (which OpenMP library the kernels are bound to) is in libdl before glibc 2.34
            libraries=["dl"] if sys.platform.startswith("linux") else [],
            extra_link_args=[],
        )
        for name in KERNELS
    ]
    return cythonize(exts, compiler_directives=directives, include_path=["csrc"])


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtWithOpenMP})
