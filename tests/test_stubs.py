"""The type stubs of the compiled modules (fastcnn/*.pyi) name what the modules hold.

mypy trusts a stub over the module, so a kernel whose parameters change without its stub
would be type-checked against the old ones. The stubs ship in the wheel (package-data), so
this runs on an installed wheel too.
"""

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import fastcnn

PACKAGE = Path(fastcnn.__file__).parent
STUBS = sorted(PACKAGE.glob("_*.pyi"))


def stub_names(stub):
    """{function name: its parameter names} and the other names a stub declares."""
    functions, values = {}, set()
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            arguments = node.args
            functions[node.name] = [a.arg for a in arguments.posonlyargs + arguments.args]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            values.add(node.target.id)
        elif isinstance(node, ast.ClassDef):
            values.add(node.name)
    return functions, values


def test_the_compiled_modules_have_stubs():
    assert {stub.stem for stub in STUBS} >= {
        "_array_cache",
        "_augment",
        "_batchnorm",
        "_conv",
        "_dense",
        "_elementwise",
        "_fused",
        "_network",
        "_openmp",
        "_pool",
    }
    assert (PACKAGE / "py.typed").is_file()


@pytest.mark.parametrize("stub", STUBS, ids=lambda stub: stub.name)
def test_stub_matches_its_module(stub):
    module = importlib.import_module(f"fastcnn.{stub.stem}")
    functions, values = stub_names(stub)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(functions) | values, f"{stub.name} and {module.__name__} differ"
    for name, parameters in functions.items():
        assert list(inspect.signature(getattr(module, name)).parameters) == parameters, name
