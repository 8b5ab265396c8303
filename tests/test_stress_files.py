"""Damaged and interrupted checkpoints of a real model and optimizer.

test_io.py flips every byte and cuts at every length of a small checkpoint; here the file is
the real thing (LeNet-5 plus Adam's moments, both formats, ~0.5 MB): a sample of flips over
the whole file and every header and trailer byte, truncations, and a writer process killed
with SIGKILL in the middle of saving, which must leave a complete earlier checkpoint.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastcnn
from fastcnn import models, nn, optim

FORMATS = [".npz", ".safetensors"]


def trained_checkpoint():
    """LeNet-5 after two Adam steps: model weights, moments, step counts, plain values."""
    model = models.LeNet5(rng=0)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = np.random.default_rng(1).standard_normal((4, 1, 28, 28)).astype(np.float32)
    for _ in range(2):
        loss_fn(model(x), np.arange(4))
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 2}


@pytest.fixture(scope="module", params=FORMATS)
def checkpoint_bytes(request, tmp_path_factory):
    if request.param == ".safetensors":
        pytest.importorskip("safetensors")
    path = tmp_path_factory.mktemp("good") / f"good{request.param}"
    fastcnn.save(trained_checkpoint(), path)
    return request.param, path.read_bytes()


def positions_to_damage(size, rng, sampled=200, edge=160):
    """Every byte of the first and last ``edge`` (headers, zip directory, seal) and a random
    sample of the rest (array data)."""
    edges = np.r_[0 : min(edge, size), max(0, size - edge) : size]
    middle = rng.choice(np.arange(edge, max(edge, size - edge)), size=sampled, replace=False)
    return np.unique(np.r_[edges, middle])


def assert_refused(tmp_path, suffix, data, name):
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(bytes(data))
    with pytest.raises(fastcnn.CheckpointError, match=rf"cannot load checkpoint '.*{name}"):
        fastcnn.load(path)


def test_the_undamaged_checkpoint_loads_exactly(checkpoint_bytes, tmp_path):
    suffix, data = checkpoint_bytes
    path = tmp_path / f"copy{suffix}"
    path.write_bytes(data)
    loaded, want = fastcnn.load(path), trained_checkpoint()
    assert loaded["epoch"] == 2 and len(data) > 400_000
    for key, value in want["model"].items():
        np.testing.assert_array_equal(loaded["model"][key], value)
    model = models.LeNet5()
    model.load_state_dict(loaded["model"])
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    optimizer.load_state_dict(loaded["optimizer"])


def test_sampled_byte_flips_are_refused(checkpoint_bytes, tmp_path):
    suffix, data = checkpoint_bytes
    positions = positions_to_damage(len(data), np.random.default_rng(1))
    masks = (0x01, 0x80, 0xFF)  # the lowest bit, the sign/top bit, the whole byte, in turn
    for index, position in enumerate(positions):
        damaged = bytearray(data)
        damaged[position] ^= masks[index % len(masks)]
        assert_refused(tmp_path, suffix, damaged, f"flip{position}")


def test_sampled_truncations_are_refused(checkpoint_bytes, tmp_path):
    suffix, data = checkpoint_bytes
    rng = np.random.default_rng(7)
    for length in positions_to_damage(len(data), rng, sampled=60, edge=64):
        assert_refused(tmp_path, suffix, data[:length], f"cut{length}")


def test_appended_bytes_are_refused(checkpoint_bytes, tmp_path):
    suffix, data = checkpoint_bytes
    for extra in (b"\0", b"PK\x05\x06", bytes(1000)):
        assert_refused(tmp_path, suffix, data + extra, f"long{len(extra)}")


WRITER = """
    import sys
    import fastcnn
    from fastcnn import models

    path = sys.argv[1]
    version = 0
    while True:
        fastcnn.save({"model": models.LeNet5(rng=version % 3).state_dict(),
                      "version": version}, path)
        if version == 0:
            print("saved", flush=True)
        version += 1
"""


@pytest.mark.parametrize("suffix", FORMATS)
def test_writer_killed_mid_save_leaves_a_complete_checkpoint(tmp_path, suffix):
    """SIGKILL (no cleanup handlers run) at random moments of a save loop: the file always
    loads and holds exactly one of the versions written, never a mix or a torn file."""
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    path = tmp_path / f"run{suffix}"
    package_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    want = {seed: models.LeNet5(rng=seed).state_dict() for seed in range(3)}
    rng = np.random.default_rng(0)
    for _ in range(4):
        writer = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), str(path)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=package_parent,
        )
        assert writer.stdout.readline().strip() == "saved"
        time.sleep(rng.uniform(0.05, 0.4))
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
        writer.stdout.close()
        loaded = fastcnn.load(path)
        expected = want[loaded["version"] % 3]
        assert loaded["model"].keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_array_equal(loaded["model"][key], value)
