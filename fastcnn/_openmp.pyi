# Stub of the compiled module csrc/_openmp.pyx (what the kernels were built with);
# tests/test_stubs.py checks that its names match the module's.

OPENMP_ENABLED: bool
DEBUG_CYTHON: bool

def openmp_max_threads() -> int: ...
def openmp_library() -> str | None: ...
