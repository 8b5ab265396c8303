"""fastcnn.show_config reports how the kernels were built and what they run with."""

import os

import fastcnn
from fastcnn import _isa
from fastcnn._config import config
from fastcnn._openmp import OPENMP_ENABLED


def test_show_config_prints_the_facts(capsys):
    fastcnn.show_config()
    text = capsys.readouterr().out
    assert f"fastcnn {fastcnn.__version__}" in text
    assert ("OpenMP:          on" in text) == bool(OPENMP_ENABLED)
    assert "kernel BLAS:" in text and "held at 1 thread" in text
    assert f"threads:         {fastcnn.get_num_threads()}" in text
    assert f"kernel ISA:      {config()['kernel_isa']}" in text


def test_reports_which_copy_of_the_c_kernels_runs():
    """The kernel ISA line names the copy that runs, the copies this CPU runs and the cap.
    Under FASTCNN_MAX_CPU_ISA (tools/debug_build_tests.sh and tools/asan_kernels.sh, CI's
    portable step set it) the copy is the best this CPU has within the cap."""
    isa = config()["kernel_isa"]
    available = _isa.available()
    assert isa == _isa.describe()
    assert isa.startswith(f"{_isa.active()} (this CPU runs: {', '.join(available)}; "), isa
    assert available[-1] == "portable" and set(available) <= set(_isa.LEVELS)
    cap = os.environ.get(_isa.ENV_VAR, "").strip().lower()
    if cap:
        assert isa.endswith(f"; {_isa.ENV_VAR}={os.environ[_isa.ENV_VAR]})"), isa
        assert _isa.active() == next(
            name for name in available if _isa.LEVELS[name] <= _isa.LEVELS[cap]
        )
    else:
        assert isa.endswith(f"; {_isa.ENV_VAR} unset)"), isa
        assert _isa.active() == available[0]


def test_config_reports_the_loaded_openmp_runtime():
    info = config()
    if OPENMP_ENABLED:
        assert info["openmp_runtime"] and "omp" in info["openmp_runtime"]
    else:
        assert info["openmp_runtime"] is None
    assert info["kernel_blas"], "the BLAS behind scipy.linalg.cython_blas was not found"
    assert all(lib["user_api"] == "blas" for lib in info["kernel_blas"])


def test_version_is_single_sourced():
    from importlib.metadata import version

    assert fastcnn.__version__ == version("fastcnn")


def test_reports_the_runtime_the_kernels_are_bound_to_with_torch_loaded_first():
    """With PyTorch imported first the kernels bind to PyTorch's OpenMP runtime: say so."""
    import os
    import subprocess
    import sys

    import pytest

    pytest.importorskip("torch")
    if not OPENMP_ENABLED:
        pytest.skip("serial build")
    code = "import torch, fastcnn; fastcnn.show_config()"
    package_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=package_parent,
        check=True,
    )
    runtime = next(line for line in result.stdout.splitlines() if "OpenMP runtime" in line)
    assert "torch" in runtime
    assert "loaded before fastcnn" in result.stdout
