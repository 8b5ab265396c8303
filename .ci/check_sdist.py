"""Check an sdist's file list: the Cython sources are in, generated and built files are out.

Usage: python .ci/check_sdist.py dist/fastcnn-X.Y.Z.tar.gz
"""

import sys
import tarfile
from pathlib import PurePosixPath

REQUIRED = [
    "setup.py",
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "PKG-INFO",
    "fastcnn/__init__.py",
    "fastcnn/_version.py",
    "fastcnn/py.typed",
]
# generated C, compiled objects and build output must never ship in the sdist
FORBIDDEN_SUFFIXES = {".c", ".cpp", ".html", ".so", ".pyd", ".dylib", ".dll", ".o", ".pyc"}
FORBIDDEN_DIRS = {"build", "dist", "wheelhouse", "__pycache__", ".venv", ".git"}


def problems(names):
    """What is wrong with the sdist whose members (without the top directory) are ``names``."""
    found = []
    paths = [PurePosixPath(name) for name in names]
    for required in REQUIRED:
        if PurePosixPath(required) not in paths:
            found.append(f"missing {required}")
    if not [p for p in paths if p.parent == PurePosixPath("csrc") and p.suffix == ".pyx"]:
        found.append("no csrc/*.pyx Cython sources")
    for path in paths:
        if path.suffix in FORBIDDEN_SUFFIXES:
            found.append(f"generated or built file {path}")
        if FORBIDDEN_DIRS & set(path.parts[:-1]):
            found.append(f"file from a build or cache directory: {path}")
    return found


def main(sdist):
    with tarfile.open(sdist) as tar:
        members = [m.name for m in tar.getmembers() if m.isfile()]
    top = {name.split("/", 1)[0] for name in members}
    if len(top) != 1:
        sys.exit(f"{sdist}: expected one top-level directory, found {sorted(top)}")
    names = sorted(name.split("/", 1)[1] for name in members)
    print(f"{sdist}: {len(names)} files")
    for name in names:
        print(f"    {name}")
    found = problems(names)
    if found:
        sys.exit(f"{sdist} is wrong:\n  " + "\n  ".join(found))
    print(f"{sdist}: OK (Cython sources in; no generated C, compiled files or build dirs)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
