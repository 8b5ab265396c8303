#!/usr/bin/env bash
# Run the kernel tests, and the property and thread stress tests that drive the kernels through
# random shapes, whole models and concurrent threads, under AddressSanitizer: out-of-bounds
# reads/writes, use-after-free and double frees in fastcnn's compiled code abort the run with
# a report naming the source line.
#
# The extensions are built with -fsanitize=address in a throwaway copy of the source tree (the
# developer's in-place build is never touched). CPython itself is not instrumented, so the
# ASan runtime is preloaded into the real interpreter (sys.executable, not a venv shim):
# LD_PRELOAD=$(gcc -print-file-name=libasan.so). Leak detection is off: CPython deliberately
# leaves memory allocated at exit, which LeakSanitizer would report on every run.
# Extra arguments go to pytest, e.g. tools/asan_kernels.sh -x -q.
#
# PYTHON (default: python3) picks the interpreter; CC (default: gcc) the compiler, whose
# libasan is preloaded. Needs setuptools and Cython>=3.1 importable by the interpreter.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/_source_copy.sh
source "$repo/tools/_source_copy.sh"
# sys.executable, not the command name: that may be a wrapper script (pyenv's shims are bash),
# and not its realpath either, which would leave a venv for its base interpreter.
python=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
cc=${CC:-gcc}
libasan=$("$cc" -print-file-name=libasan.so)
if [[ ! -e $libasan ]]; then
    echo "asan_kernels.sh: $cc has no libasan.so (Debian/Ubuntu: apt-get install libasan8)" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fastcnn-asan.XXXXXX")
trap 'rm -rf "$work"' EXIT
copy_source_tree "$repo" "$work/src"
cd "$work/src"

echo "== building the kernels with -fsanitize=address in $work"
# The flags go in CC itself: setup.py's OpenMP probe links an executable, which ignores
# LDFLAGS, and would then fail and silently give a serial build. FASTCNN_OPENMP=1 makes a
# failed probe an error: the parallel kernels are the ones worth checking.
# The tests run under FASTCNN_MAX_CPU_ISA=baseline: the baseline copy of the C kernels is
# the one selected at import, and the kernel test files run it and the portable copy
# (tests/conftest.py's kernel_copy; the wider copies are the normal CI run's). test_config
# checks the selection.
export FASTCNN_MAX_CPU_ISA=baseline
CC="$cc -fsanitize=address -fno-omit-frame-pointer -g" FASTCNN_OPENMP=1 \
    "$python" setup.py build_ext --inplace > "$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; echo "asan_kernels.sh: the ASan build failed" >&2; exit 1; }

# halt_on_error (the default) stops at the first error; abort_on_error gives a non-zero exit
# code pytest cannot swallow.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:print_summary=1"
export LD_PRELOAD=$libasan
# NumPy's own allocator, not fastcnn's array cache: ASan must see each array's block on its
# own, its bounds and its free, not a kept block reused by the next array.
export FASTCNN_ARRAY_CACHE=0
"$python" -c 'from fastcnn._openmp import OPENMP_ENABLED; assert OPENMP_ENABLED' ||
    { echo "asan_kernels.sh: the ASan build has no OpenMP" >&2; exit 1; }
echo "== kernel tests under ASan ($python, LD_PRELOAD=$libasan)"
"$python" -m pytest -p no:cacheprovider "${KERNEL_TESTS[@]}" "$@"
