#!/usr/bin/env bash
# Run the whole test suite against a FASTCNN_DEBUG_CYTHON=1 build of fastcnn (Cython's
# boundscheck, wraparound and initializedcheck on: an out-of-range index in a kernel raises
# IndexError instead of corrupting memory).
#
# The build happens in a throwaway copy of the source tree, installed into a throwaway venv
# (reusing the calling environment's packages: numpy/scipy/pytest/hypothesis/torch, no
# download), so the developer's in-place build is never touched. Extra arguments go to pytest.
#
#   tools/debug_build_tests.sh              # whole suite
#   tools/debug_build_tests.sh -m "not slow"
#
# PYTHON (default: python3) picks the interpreter. Needs setuptools>=77 and Cython>=3.1
# importable by it (the build runs without isolation, offline).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/_source_copy.sh
source "$repo/tools/_source_copy.sh"
python=${PYTHON:-python3}

work=$(mktemp -d "${TMPDIR:-/tmp}/fastcnn-debug.XXXXXX")
trap 'rm -rf "$work"' EXIT

copy_source_tree "$repo" "$work/src"
# The throwaway venv sees the calling environment's packages (numpy, scipy, pytest, torch,
# Cython...) through a .pth file: this works whether $python is a system interpreter or itself
# in a venv (where --system-site-packages would expose the base interpreter's instead). Lines
# of a .pth only extend sys.path, so the caller's own (editable) fastcnn is not activated.
# --without-pip: Python < 3.12 would seed the venv with an old setuptools that shadows the
# caller's (and cannot read the SPDX license field); pip comes from the caller too.
"$python" -m venv --without-pip "$work/venv"
venv_python="$work/venv/bin/python"
venv_site=$("$venv_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$python" -c 'import site; print("\n".join(site.getsitepackages()))' > "$venv_site/_caller.pth"

# The suite under FASTCNN_MAX_CPU_ISA=avx2 where the CPU has AVX2 (else baseline): on an
# AVX-512 machine that makes the AVX2 copy of the C kernels the one selected at import, the
# one the model, training and stress tests run; the kernel test files run every copy up to
# it anyway (tests/conftest.py's kernel_copy). Exported: test_config checks the selection.
if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    export FASTCNN_MAX_CPU_ISA=avx2
else
    export FASTCNN_MAX_CPU_ISA=baseline
fi
echo "== building fastcnn with FASTCNN_DEBUG_CYTHON=1 in $work"
FASTCNN_DEBUG_CYTHON=1 "$venv_python" -m pip install --quiet --no-deps --no-build-isolation \
    "$work/src"

# The tests must import the debug build, not the developer's (editable) fastcnn.
(cd "$work" && "$venv_python" - "$work/venv" <<'PY'
import sys
import fastcnn
from fastcnn._openmp import DEBUG_CYTHON
assert fastcnn.__file__.startswith(sys.argv[1]), f"imported the wrong fastcnn: {fastcnn.__file__}"
assert DEBUG_CYTHON, "the kernels were built without FASTCNN_DEBUG_CYTHON=1"
print(f"== testing {fastcnn.__file__} (debug checks on; kernel ISA {fastcnn._isa.describe()})")
PY
)

# Run from $work, not from the source copy: `python -m pytest` puts the working directory on
# sys.path, and the copy's fastcnn/ (no compiled kernels) must not shadow the debug build.
cd "$work"
"$venv_python" -m pytest -c src/pyproject.toml --rootdir src -p no:cacheprovider src/tests "$@"
