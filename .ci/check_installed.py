"""Check that the fastcnn being imported is an installed wheel, and print its configuration.

Usage: python check_installed.py [--built-from-sdist] [SOURCE_TREE]

Fails (exit status 1, with the reason) unless
- fastcnn was built with OpenMP;
- fastcnn is imported from this interpreter's site-packages, not from SOURCE_TREE or the cwd;
- Cython cannot be imported (a wheel user has no Cython);
- the package holds its py.typed marker (PEP 561: type checkers then read its annotations);
- an OpenMP build's runtime, as show_config() reports it, is the copy vendored into the wheel
  by the repair tool (auditwheel/delvewheel: ``fastcnn.libs/``; delocate: ``fastcnn/.dylibs/``),
  or, with --built-from-sdist (pip built it here, unrepaired), any loaded runtime.
Run it without importing PyTorch first: PyTorch brings its own OpenMP runtime (see README).
"""

import argparse
import importlib.util
import sys
import sysconfig
from pathlib import Path

VENDORED_LIB_DIRS = ("fastcnn.libs", ".dylibs")


def site_packages():
    return {Path(sysconfig.get_path(key)).resolve() for key in ("purelib", "platlib")}


def is_inside(path, directory):
    return Path(path).resolve().is_relative_to(Path(directory).resolve())


def problems(fastcnn, source_tree, vendored_runtime=True):
    from fastcnn._config import config

    found = []
    package = Path(fastcnn.__file__).resolve().parent
    if not any(package.parent == sp for sp in site_packages()):
        found.append(f"fastcnn imported from {package}, not from site-packages {site_packages()}")
    if source_tree and is_inside(package, source_tree):
        found.append(f"fastcnn imported from the source tree {source_tree}")
    if not (package / "py.typed").is_file():
        found.append(f"no py.typed in {package}: the package-data of pyproject.toml lost it")
    if importlib.util.find_spec("Cython") is not None:
        found.append("Cython is importable: the wheel's test environment must not have it")
    info = config()
    if not info["openmp"]:
        found.append("a serial build (no OpenMP): CI and release builds use FASTCNN_OPENMP=1")
    else:
        runtime = info["openmp_runtime"]
        if runtime is None:
            found.append("OpenMP build, but no OpenMP runtime is loaded")
        elif vendored_runtime and (
            Path(runtime).parent.name not in VENDORED_LIB_DIRS
            or not is_inside(runtime, package.parent)
        ):
            found.append(f"OpenMP runtime {runtime} is not the copy vendored in the wheel")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_tree", nargs="?", help="the checkout fastcnn must not come from")
    parser.add_argument(
        "--built-from-sdist",
        action="store_true",
        help="pip built fastcnn from the sdist: its OpenMP runtime is not vendored",
    )
    args = parser.parse_args(argv)

    import fastcnn

    print(f"fastcnn imported from {fastcnn.__file__}")
    fastcnn.show_config()
    found = problems(fastcnn, args.source_tree, vendored_runtime=not args.built_from_sdist)
    if found:
        sys.exit("installed fastcnn is wrong:\n  " + "\n  ".join(found))
    runtime = "OpenMP runtime loaded" if args.built_from_sdist else "vendored OpenMP runtime"
    print(f"installed fastcnn: OK (site-packages, no Cython, {runtime})")


if __name__ == "__main__":
    main()
