"""Which ISA copy of the C kernels runs (fastcnn._isa): the best this CPU has, capped by
FASTCNN_MAX_CPU_ISA at import; ``_isa.use`` between kernel calls; every copy deterministic.

The kernels' results on each copy are checked against the reference by the kernel test
files (the ``kernel_copy`` fixture, tests/conftest.py); this file checks the selection.
"""

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kernel_copies import COPIES
from numpy.testing import assert_array_equal

import fastcnn
from fastcnn import _isa
from fastcnn import functional as F

NAMES = ["avx512", "avx2", "baseline", "portable"]  # best first


def best_within(cap):
    """The copy the selection must give for the cap: the best this CPU runs, no better."""
    return next(name for name in _isa.available() if _isa.LEVELS[name] <= _isa.LEVELS[cap])


def run_python(code, cap):
    """Run code in a new interpreter that imports this fastcnn, with FASTCNN_MAX_CPU_ISA=cap
    (None: unset)."""
    env = dict(os.environ)
    env.pop(_isa.ENV_VAR, None)
    if cap is not None:
        env[_isa.ENV_VAR] = cap
    package_parent = Path(fastcnn.__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=package_parent,
        env=env,
    )


def test_levels_and_available_copies():
    assert sorted(_isa.LEVELS, key=_isa.LEVELS.get, reverse=True) == NAMES
    available = _isa.available()
    assert available == [name for name in NAMES if name in available]  # best first
    assert available[-1] == "portable"  # plain C: every CPU runs it
    assert _isa.active() in available


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or not Path("/proc/cpuinfo").exists(),
    reason="x86-64 Linux only",
)
def test_available_copies_follow_the_cpu_flags():
    """avx2 needs AVX2 + FMA; avx512 AVX-512 F/BW/DQ/VL as well (csrc/cpu_dispatch.h)."""
    flags_line = next(
        (
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        ),
        "",
    )
    flags = set(flags_line.split(":", 1)[-1].split())
    available = _isa.available()
    if "baseline" not in available:
        pytest.skip("a build without the vectorised copies")
    has_avx2 = {"avx2", "fma"} <= flags
    assert ("avx2" in available) == has_avx2
    assert ("avx512" in available) == (
        has_avx2 and {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
    )


@pytest.mark.parametrize(
    "cap",
    ["baseline", " AVX2 ", "portable", "avx512", "", None],
    ids=["baseline", "AVX2-spaced", "portable", "avx512", "empty", "unset"],
)
def test_the_cap_selects_the_best_copy_within_it_at_import(cap):
    """FASTCNN_MAX_CPU_ISA (any case, surrounding blanks ignored; empty as unset) caps the
    copy selected at import, and show_config's kernel ISA line starts with its name."""
    code = "import fastcnn; from fastcnn import _isa; fastcnn.show_config(); print(_isa.active())"
    result = run_python(code, cap)
    assert result.returncode == 0, result.stderr
    want = best_within(cap.strip().lower() if cap and cap.strip() else "avx512")
    *lines, active = result.stdout.splitlines()
    assert active == want
    line = next(line for line in lines if line.startswith("kernel ISA:"))
    assert line.startswith(f"kernel ISA:      {want} (this CPU runs: "), line
    assert line.endswith(
        f"{_isa.ENV_VAR}={cap})" if cap and cap.strip() else f"{_isa.ENV_VAR} unset)"
    ), line


def test_a_bad_cap_fails_the_import_naming_the_variable_value_and_choices():
    result = run_python("import fastcnn", "avx3")
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ValueError: "), result.stderr
    assert f"{_isa.ENV_VAR}='avx3'" in error
    assert "avx512, avx2, baseline, portable" in error, error


@pytest.fixture
def restore_copy():
    previous = _isa.active()
    yield
    _isa.use(previous)


@pytest.mark.usefixtures("restore_copy")
def test_use_selects_the_best_copy_within_its_argument():
    """use(name) is a cap too: 'avx512' on a CPU without AVX-512 gives the best it has, not
    an error; each copy's vector length and filter block are its own."""
    for name in NAMES:
        want = best_within(name)
        assert _isa.use(name) == want
        assert _isa.active() == want
        copy = COPIES[want]
        assert _isa.vector_length(np.float32) == copy.vl(np.float32)
        assert _isa.vector_length(np.float64) == copy.vl(np.float64)
        # the filter kernel's block: its wide tile's filters (tests/kernel_copies.py's tiles)
        assert _isa.group_width(np.float32) == copy.gw(np.float32)
        assert _isa.group_width(np.float64) == copy.gw(np.float64)
        assert _isa.describe().startswith(f"{want} (this CPU runs: ")
    assert _isa.use("avx512") == _isa.available()[0]
    with pytest.raises(ValueError, match="max_isa must be one of"):
        _isa.use("avx3")


def conv_results(x, w, b, stride, padding):
    """conv2d, its gradients, and the fused op's, with a non-integer output gradient."""
    out = F.conv2d(x, w, b, stride, padding)
    grads = F.conv2d_backward(np.sin(out), x, w, stride, padding)
    pooled, indices = F.conv2d_relu_max_pool2d(x, w, b, stride, padding)
    fused = F.conv2d_relu_max_pool2d_backward(
        np.cos(pooled), pooled, indices, x, w, stride, padding
    )
    return [out, *grads, pooled, indices, *fused]


@pytest.mark.usefixtures("restore_copy")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_copy_gives_the_same_bits_on_1_and_3_threads(dtype):
    """On every copy this CPU runs (whatever the cap): the row kernel, the filter kernel
    and GEMM's layers, 37 images (uneven shares of the gradient chunks)."""
    rng = np.random.default_rng(7)
    layers = [
        ((3, 18, 21), 3, (3, 5), (1, 1), (1, 2)),  # row kernel on every copy
        ((4, 9, 11), 20, (3, 3), (1, 2), (1, 1)),  # filter kernel
        ((3, 10, 9), 1, (2, 2), (2, 2), (0, 0)),
    ]  # GEMM for float32
    cases = []
    for (c, h, width), k, kernel, stride, padding in layers:
        x = rng.standard_normal((37, c, h, width)).astype(dtype)
        w = rng.standard_normal((k, c, *kernel)).astype(dtype)
        b = rng.standard_normal(k).astype(dtype)
        cases.append((x, w, b, stride, padding))
    for name in _isa.available():
        assert _isa.use(name) == name
        for case in cases:
            with fastcnn.threads(1):
                want = conv_results(*case)
            with fastcnn.threads(3):
                got = conv_results(*case)
            for g, e in zip(got, want, strict=True):
                assert_array_equal(g, e, err_msg=name)
