"""fastcnn makes csrc/_array_cache.pyx NumPy's allocator at import (fastcnn/_memory.py), so
that a training step's freed arrays are reused rather than faulted in again; unless the
user opts out with FASTCNN_ARRAY_CACHE=0."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from numpy._core.multiarray import get_handler_name

import fastcnn
from fastcnn import _array_cache

UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")  # ASan's allocator faults its own way
LINUX = sys.platform.startswith("linux")

# Two 20 MiB arrays made and freed per "step", as a training step's largest activations:
# the page faults of three steps after two of warm-up.
FAULTS_OF_THREE_STEPS = """
import resource, numpy as np, fastcnn
from numpy._core.multiarray import get_handler_name
def step():
    a = np.ones(5 << 20, np.float32); b = np.ones(5 << 20, np.float32)
    del a, b
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3): step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(get_handler_name())
"""


def run(env_changes):
    env = {k: v for k, v in os.environ.items() if k != "FASTCNN_ARRAY_CACHE"}
    env.update(env_changes)
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_THREE_STEPS],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    faults, handler = result.stdout.strip().splitlines()
    return int(faults), handler


@pytest.mark.skipif(not LINUX or UNDER_ASAN, reason="glibc's page faults (not ASan's)")
def test_freed_arrays_are_reused_without_page_faults():
    faults, handler = run({})
    assert handler == "fastcnn_array_cache"
    assert faults < 300  # 3 steps x 2 x 20 MiB would be 30,720 pages
    default_faults, handler = run({"FASTCNN_ARRAY_CACHE": "0"})
    assert handler == "default_allocator"
    assert default_faults > 3000  # glibc unmaps the blocks and faults the pages in again


@pytest.fixture
def cache_in_use():
    """The cache as this test's allocator, emptied before and after."""
    previous = _array_cache.install()
    _array_cache.clear()
    yield
    _array_cache.clear()
    _array_cache.restore(previous)


def test_arrays_are_aligned_and_a_freed_block_is_reused(cache_in_use):
    small, big = np.empty(1000, np.float32), np.empty(1 << 20, np.float32)
    assert get_handler_name(small) == get_handler_name(big) == "fastcnn_array_cache"
    assert small.ctypes.data % 64 == 0 and big.ctypes.data % 64 == 0
    address = big.ctypes.data
    del small, big  # the 4 KiB array goes back to malloc, the 4 MiB one is kept
    assert _array_cache.kept() == (1, 4 << 20)
    again = np.empty((1 << 20) - 100, np.float32)  # within an eighth: the same block
    assert again.ctypes.data == address and _array_cache.kept() == (0, 0)


def test_a_reused_block_is_zeroed_for_zeros(cache_in_use):
    ones = np.ones(1 << 18, np.float64)
    del ones
    zeros = np.zeros(1 << 18, np.float64)
    assert _array_cache.kept() == (0, 0)  # it came from the cache
    assert not zeros.any()


def test_no_block_wastes_more_than_an_eighth(cache_in_use):
    whole = np.empty(1 << 20, np.uint8)
    del whole
    half = np.empty(1 << 19, np.uint8)
    assert _array_cache.kept() == (1, 1 << 20)  # too big for half a MiB: a fresh block
    del half


def test_resizing_keeps_the_data(cache_in_use):
    grown = np.arange(100_000, dtype=np.float64)
    grown.resize(300_000, refcheck=False)  # NumPy's realloc path
    np.testing.assert_array_equal(grown[:100_000], np.arange(100_000))
    assert not grown[100_000:].any()  # resize zero-fills the new part
    grown.resize(10, refcheck=False)
    np.testing.assert_array_equal(grown, np.arange(10))


def test_the_cache_is_bounded(cache_in_use):
    blocks = [np.empty(16 << 20, np.uint8) for _ in range(20)]  # 320 MiB
    del blocks
    count, size = _array_cache.kept()
    assert size <= _array_cache.max_bytes and count == _array_cache.max_bytes // (16 << 20)
    huge = np.empty(_array_cache.max_bytes // 2, np.uint8)  # beyond a quarter: never kept
    del huge
    assert _array_cache.kept() == (count, size)


def test_arrays_freed_in_other_threads(cache_in_use):
    arrays = [np.full(1 << 16, i, np.float32) for i in range(64)]

    def free_half(half):
        for i in range(half, 64, 2):
            arrays[i] = None

    workers = [threading.Thread(target=free_half, args=(h,)) for h in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert _array_cache.kept()[0] == 64
    fresh = [np.full(1 << 16, i, np.float32) for i in range(64)]
    assert _array_cache.kept() == (0, 0)
    assert all((a == i).all() for i, a in enumerate(fresh))


def test_the_opt_out_keeps_numpys_allocator():
    _, handler = run({"FASTCNN_ARRAY_CACHE": "0"})
    assert handler == "default_allocator"


def test_show_config_says_what_was_done(capsys):
    fastcnn.show_config()
    assert f"memory:          {fastcnn._memory.state}" in capsys.readouterr().out
