"""fastcnn tunes glibc's malloc at import (fastcnn/_malloc.py) so that a training step's
freed arrays are reused rather than returned to the OS and faulted in again, unless the
user chose (FASTCNN_MALLOC_TUNING=0, or glibc's own MALLOC_*_ variables)."""

import os
import platform
import subprocess
import sys

import pytest

import fastcnn

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")  # ASan's allocator replaces glibc's

# Two 20 MiB arrays made and freed per "step", as a training step's largest activations:
# the page faults of three steps after two of warm-up.
FAULTS_OF_THREE_STEPS = """
import resource, numpy as np, fastcnn
def step():
    a = np.ones(5 << 20, np.float32); b = np.ones(5 << 20, np.float32)
    del a, b
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3): step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(fastcnn._malloc.tuning)
"""


def run(env_changes):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "FASTCNN_MALLOC"))}
    env.update(env_changes)
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_THREE_STEPS],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    faults, tuning = result.stdout.strip().splitlines()
    return int(faults), tuning


@pytest.mark.skipif(not GLIBC or UNDER_ASAN, reason="glibc's allocator only (not ASan's)")
def test_freed_arrays_are_reused_without_page_faults():
    faults, tuning = run({})
    assert tuning.startswith("glibc, freed memory kept for reuse"), tuning
    assert faults < 300  # 3 steps x 2 x 20 MiB would be 30,720 pages
    untuned_faults, tuning = run({"FASTCNN_MALLOC_TUNING": "0"})
    assert tuning == "glibc defaults (FASTCNN_MALLOC_TUNING=0)"
    assert untuned_faults > 3000  # glibc trims its heap and faults the pages in again


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_the_users_own_glibc_settings_win():
    _, tuning = run({"MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert tuning == "glibc, as set in the environment (MALLOC_TRIM_THRESHOLD_)"


def test_show_config_says_what_was_done(capsys):
    fastcnn.show_config()
    assert f"memory:          {fastcnn._malloc.tuning}" in capsys.readouterr().out
