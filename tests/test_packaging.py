"""Packaging: what a user meets when fastcnn is not built, built serial, or built wrongly.

The build tests compile the kernels in a temporary copy of the source tree with
``python setup.py build_ext --inplace`` (no build isolation, so they need Cython, setuptools
and a C compiler in this environment; `.ci/run` installs the build requirements). Run from
an installed wheel, away from the source tree, they skip: there is nothing to build.
"""

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import fastcnn

SOURCE_TREE = Path(__file__).resolve().parents[1]
COMPILED_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")
BUILD_TIMEOUT = 300  # seconds; a full build takes ~20 s of CPU on the 2-core CI machine

# What the build needs from a source checkout (README and LICENSE: pyproject's metadata).
SOURCE_FILES = ["setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"]


def clean_env(**overrides):
    """This environment without build switches or PYTHONSAFEPATH, plus ``overrides``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("FASTCNN_")
        and key not in ("CC", "LDSHARED", "PYTHONSAFEPATH", "PYTHONPATH")
    }
    env.update(overrides)
    return env


def run(args, cwd, env=None, timeout=120):
    return subprocess.run(
        args,
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def copy_package_without_binaries(destination):
    """The fastcnn package under test as a never-built checkout has it: Python files only."""
    package = Path(fastcnn.__file__).parent
    binaries = [f"*{suffix}" for suffix in COMPILED_SUFFIXES]  # also delocate's .dylibs/
    shutil.copytree(
        package, destination / "fastcnn", ignore=shutil.ignore_patterns(*binaries, "__pycache__")
    )


def test_import_from_a_never_built_checkout_says_how_to_build(tmp_path):
    copy_package_without_binaries(tmp_path)
    compiled = [p for p in (tmp_path / "fastcnn").rglob("*") if p.suffix in COMPILED_SUFFIXES]
    assert not compiled, f"the copy should hold no compiled modules: {compiled}"

    # cwd comes first on sys.path, so python imports the unbuilt copy, as in a fresh clone.
    # -S: no site-packages, as where fastcnn was never installed (an editable install's
    # import hook would otherwise supply the missing compiled submodules from its own tree).
    result = run([sys.executable, "-S", "-c", "import fastcnn"], cwd=tmp_path)

    assert result.returncode != 0
    assert "ImportError: fastcnn's compiled kernels are not built" in result.stderr
    assert 'pip install -e ".[dev]"' in result.stderr
    assert "python setup.py build_ext --inplace" in result.stderr


# --- building from source -----------------------------------------------------------------


def has_source_tree():
    return (SOURCE_TREE / "setup.py").is_file() and (SOURCE_TREE / "csrc").is_dir()


def c_compiler():
    """Absolute path of the C compiler Python was built with, or None."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


def build_requirements_missing():
    missing = []
    for module in ("Cython", "setuptools", "numpy", "scipy"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def skip_reason():
    if not has_source_tree():
        return "no source tree next to the tests (testing an installed wheel)"
    if sys.platform == "win32":
        return "the build tests use a POSIX shell compiler wrapper"
    if c_compiler() is None:
        return "no C compiler"
    missing = build_requirements_missing()
    if missing:
        return f"build requirements missing: {', '.join(missing)}"
    return None


needs_build = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture(scope="module")
def cythonized_tree(tmp_path_factory):
    """A copy of the source tree with the Cython step already done (each test then compiles)."""
    tree = tmp_path_factory.mktemp("fastcnn-src")
    for name in SOURCE_FILES:
        shutil.copy2(SOURCE_TREE / name, tree / name)
    shutil.copytree(
        SOURCE_TREE / "csrc",
        tree / "csrc",
        ignore=shutil.ignore_patterns("*.c", "*.cpp", "*.html", "*.so", "*.o"),
    )
    shutil.copytree(
        SOURCE_TREE / "fastcnn",
        tree / "fastcnn",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"),
    )
    # setup.py cythonizes when it is loaded; asking for the version does only that.
    result = run([sys.executable, "setup.py", "--version"], cwd=tree, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    return tree


@pytest.fixture
def source_tree(cythonized_tree, tmp_path):
    """A private copy of the cythonized tree (copy2 keeps the .c newer than the .pyx)."""
    tree = tmp_path / "src"
    shutil.copytree(cythonized_tree, tree)
    return tree


@pytest.fixture
def cc_without_openmp(tmp_path):
    """A compiler wrapper that refuses -fopenmp, as a toolchain without OpenMP does."""
    wrapper = tmp_path / "cc-without-openmp"
    wrapper.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        for arg in "$@"; do
            case "$arg" in
                -fopenmp*) echo "cc-without-openmp: unsupported option '$arg'" >&2; exit 1;;
            esac
        done
        exec "{c_compiler()}" "$@"
        """)
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


def build_in_place(tree, **env):
    return run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree,
        env=clean_env(**env),
        timeout=BUILD_TIMEOUT,
    )


SERIAL_BUILD_CHECK = """
import numpy as np
import fastcnn
from fastcnn import _reference, functional
from fastcnn._openmp import OPENMP_ENABLED

assert fastcnn.__file__.startswith({tree!r}), fastcnn.__file__
assert not OPENMP_ENABLED and fastcnn.get_num_threads() == 1
rng = np.random.default_rng(0)
x = rng.standard_normal((3, 2, 9, 9))
w = rng.standard_normal((4, 2, 3, 3))
b = rng.standard_normal(4)
np.testing.assert_allclose(functional.conv2d(x, w, b, stride=1, padding=1),
                           _reference.conv2d(x, w, b, (1, 1), (1, 1)), rtol=1e-12, atol=1e-12)
fastcnn.show_config()
"""


def assert_serial_build_works(tree):
    """The built kernels report OpenMP off, use one thread, and compute a correct conv."""
    result = run([sys.executable, "-c", SERIAL_BUILD_CHECK.format(tree=str(tree))], cwd=tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OpenMP:          off (serial build" in result.stdout


@pytest.mark.slow
@needs_build
def test_fastcnn_openmp_0_builds_serial_kernels(source_tree):
    result = build_in_place(source_tree, FASTCNN_OPENMP="0")
    assert result.returncode == 0, result.stderr
    assert "WITHOUT OpenMP" not in result.stderr  # asked for serial: no warning
    assert_serial_build_works(source_tree)


@pytest.mark.slow
@needs_build
def test_openmp_auto_without_openmp_warns_and_builds_serial(source_tree, cc_without_openmp):
    result = build_in_place(source_tree, FASTCNN_OPENMP="auto", CC=cc_without_openmp)
    assert result.returncode == 0, result.stderr
    assert "WARNING: fastcnn is being built WITHOUT OpenMP" in result.stderr
    assert "install an OpenMP runtime" in result.stderr
    assert_serial_build_works(source_tree)


@needs_build
def test_openmp_1_without_openmp_fails_saying_what_to_install(source_tree, cc_without_openmp):
    result = build_in_place(source_tree, FASTCNN_OPENMP="1", CC=cc_without_openmp)
    assert result.returncode != 0
    assert "FASTCNN_OPENMP=1 but the compiler cannot build an OpenMP program" in result.stderr
    assert "libomp" in result.stderr and "FASTCNN_OPENMP=0" in result.stderr
    assert not list(source_tree.glob("fastcnn/_*.so")), "a failed build left modules behind"


@needs_build
@pytest.mark.parametrize("value", ["banana", "yes", "2"])
def test_bad_fastcnn_openmp_value_is_refused(source_tree, value):
    result = build_in_place(source_tree, FASTCNN_OPENMP=value)
    assert result.returncode != 0
    assert f"FASTCNN_OPENMP must be auto, 0 or 1, got '{value}'" in result.stderr
