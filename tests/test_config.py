"""fastcnn.show_config reports how the kernels were built and what they run with."""

import fastcnn
from fastcnn._config import config
from fastcnn._openmp import OPENMP_ENABLED


def test_show_config_prints_the_facts(capsys):
    fastcnn.show_config()
    text = capsys.readouterr().out
    assert f"fastcnn {fastcnn.__version__}" in text
    assert ("OpenMP:          on" in text) == bool(OPENMP_ENABLED)
    assert "kernel BLAS:" in text and "held at 1 thread" in text
    assert f"threads:         {fastcnn.get_num_threads()}" in text


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
