"""fastcnn.save / fastcnn.load: exact round trips, atomic writes, damaged and foreign files."""

import hashlib
import io
import json
import math
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest

import fastcnn
from fastcnn.nn.parameter import Parameter
from fastcnn.optim import SGD, Adam

FORMATS = [".npz", ".safetensors"]


def nested_checkpoint():
    rng = np.random.default_rng(0)
    model = {
        "conv1.weight": rng.standard_normal((6, 1, 5, 5)).astype(np.float32),
        "conv1.bias": rng.standard_normal(6).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    optimizer = {
        "state": {0: {"step": 3, "exp_avg": rng.standard_normal((6, 1, 5, 5)).astype(np.float32)}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "amsgrad": False, "params": [0, 1]}],
    }
    return {
        "model": model,
        "optimizer": optimizer,
        "epoch": 3,
        "history": {"loss": [2.3, 1.1, 0.7], "accuracy": [0.1, 0.5, 0.8]},
        "note": "LeNet-5 on MNIST, épreuve ✓",
        "best": None,
        "finished": False,
        "big": 2**80,
        "floats": [0.1, -0.0, math.inf, -math.inf, 5e-324, 1.7976931348623157e308],
        "numpy scalars": [np.float32(0.25), np.int16(-3), np.bool_(True), np.float64(1 / 3)],
        "arrays": {
            str(dtype): (np.arange(12) % 5).astype(dtype).reshape(3, 4)
            for dtype in [
                np.bool_,
                np.int8,
                np.uint8,
                np.int16,
                np.uint16,
                np.int32,
                np.uint32,
                np.int64,
                np.uint64,
                np.float16,
                np.float32,
                np.float64,
            ]
        },
        "odd arrays": [
            np.zeros((0, 3), np.float32),
            np.array(1.5),
            np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            np.arange(4, dtype=">f4"),  # big-endian stays big-endian
            np.arange(10, dtype=np.float64)[::3],  # a strided view
        ],
        "empty": {"dict": {}, "list": [], "tuple": ()},
        7: "an int key",
        "7": "a str key that prints the same",
        "nested": {0: {1: {"deep": [np.ones(2, np.int32), (1, "two", [3.0])]}}},
    }


def assert_identical(loaded, expected, where="root"):
    """Equal values, and equal types: dtype, shape, key types, list vs tuple, int vs float."""
    assert type(loaded) is type(expected), f"{where}: {type(loaded)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(loaded) == list(expected), where  # same keys, same types, same order
        for key in expected:
            assert type(next(k for k in loaded if k == key)) is type(key), where
            assert_identical(loaded[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(loaded) == len(expected), where
        for index, (a, b) in enumerate(zip(loaded, expected, strict=True)):
            assert_identical(a, b, f"{where}[{index}]")
    elif isinstance(expected, (np.ndarray, np.generic)):
        assert loaded.dtype == expected.dtype and loaded.shape == expected.shape, where
        np.testing.assert_array_equal(loaded, expected, err_msg=where)
    elif isinstance(expected, float):
        assert loaded.hex() == expected.hex(), where  # bit for bit, sign of zero included
    else:
        assert loaded == expected, where


@pytest.mark.parametrize("suffix", FORMATS)
def test_nested_round_trip_is_exact(tmp_path, suffix):
    expected = nested_checkpoint()
    path = tmp_path / f"checkpoint{suffix}"
    fastcnn.save(expected, path)
    loaded = fastcnn.load(path)
    assert_identical(loaded, expected)
    assert all(a.flags.writeable for a in loaded["model"].values())
    assert list(loaded["optimizer"]["state"]) == [0]  # int keys come back as int


@pytest.mark.parametrize("suffix", FORMATS)
def test_awkward_keys_round_trip(tmp_path, suffix):
    # Keys that clash once turned into array names, or that zip names cannot hold.
    keys = ["a\x00b", "a_b", "x\\y", "", "__fastcnn_manifest__", "é/ü", "\n", 0, "0"]
    expected = {key: np.full(2, index, np.int16) for index, key in enumerate(keys)}
    expected["k"] = {"__fastcnn_manifest_sha256__": np.ones(1)}
    fastcnn.save(expected, tmp_path / f"keys{suffix}")
    assert_identical(fastcnn.load(tmp_path / f"keys{suffix}"), expected)


@pytest.mark.parametrize("suffix", FORMATS)
def test_nan_round_trips(tmp_path, suffix):
    path = tmp_path / f"nan{suffix}"
    fastcnn.save({"x": math.nan, "a": np.array([np.nan, 1.0], np.float32)}, path)
    loaded = fastcnn.load(path)
    assert math.isnan(loaded["x"]) and np.isnan(loaded["a"][0]) and loaded["a"][1] == 1.0


@pytest.mark.parametrize("suffix", FORMATS)
def test_top_level_array_and_list(tmp_path, suffix):
    array = np.arange(5, dtype=np.int32)
    fastcnn.save(array, tmp_path / f"a{suffix}")
    assert_identical(fastcnn.load(tmp_path / f"a{suffix}"), array)
    fastcnn.save([1, array], str(tmp_path / f"b{suffix}"))
    assert_identical(fastcnn.load(str(tmp_path / f"b{suffix}")), [1, array])


def test_flat_state_dict_is_readable_by_numpy_and_safetensors(tmp_path):
    state = {"fc.weight": np.ones((2, 3), np.float32), "fc.bias": np.zeros(2, np.float32)}
    fastcnn.save(state, tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as archive:
        assert set(archive.files) == {"fc.weight", "fc.bias", "__fastcnn_manifest__"}
        np.testing.assert_array_equal(archive["fc.weight"], state["fc.weight"])
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    fastcnn.save(state, tmp_path / "s.safetensors")
    plain = safetensors_numpy.load_file(str(tmp_path / "s.safetensors"))
    assert set(plain) == set(state)
    np.testing.assert_array_equal(plain["fc.bias"], state["fc.bias"])


def test_same_object_gives_the_same_bytes(tmp_path):
    fastcnn.save(nested_checkpoint(), tmp_path / "a.npz")
    fastcnn.save(nested_checkpoint(), tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


@pytest.mark.parametrize("suffix", FORMATS)
def test_optimizer_checkpoint_resumes_bit_for_bit(tmp_path, suffix):
    rng = np.random.default_rng(1)
    start = [rng.standard_normal(s).astype(np.float32) for s in [(4, 3), (3,)]]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in [(4, 3), (3,)]] for _ in range(10)]

    def run(params, optimizer, steps):
        for step_grads in steps:
            for param, grad in zip(params, step_grads, strict=True):
                param.grad = grad
            optimizer.step()

    for make in (lambda p: Adam(p, lr=0.01, amsgrad=True), lambda p: SGD(p, 0.1, momentum=0.9)):
        params = [Parameter(v.copy()) for v in start]
        optimizer = make(params)
        run(params, optimizer, grads[:4])
        path = tmp_path / f"resume{suffix}"
        fastcnn.save({"params": [p.data for p in params], "opt": optimizer.state_dict()}, path)
        run(params, optimizer, grads[4:])

        checkpoint = fastcnn.load(path)
        resumed_params = [Parameter(v) for v in checkpoint["params"]]
        resumed = make(resumed_params)
        resumed.load_state_dict(checkpoint["opt"])
        run(resumed_params, resumed, grads[4:])
        for ours, theirs in zip(resumed_params, params, strict=True):
            np.testing.assert_array_equal(ours.data, theirs.data)


# -- atomic writes ---------------------------------------------------------------------------


class CrashingFile:
    """A file whose write stores half of the bytes, then fails, like a crash mid-write."""

    def __init__(self, file, error):
        self.file, self.error = file, error

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()

    def write(self, data):
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        raise self.error

    def __getattr__(self, name):
        return getattr(self.file, name)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_crash_during_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, suffix, error):
    path = tmp_path / f"checkpoint{suffix}"
    fastcnn.save({"epoch": 1, "w": np.zeros(1000, np.float32)}, path)
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: CrashingFile(real_fdopen(*a, **k), error))
    with pytest.raises(type(error)):
        fastcnn.save({"epoch": 2, "w": np.ones(1000, np.float32)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert fastcnn.load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind


def test_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"

    def failing_replace(source, target):
        raise PermissionError(13, "Permission denied", target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        fastcnn.save({"epoch": 2}, path)
    assert os.listdir(tmp_path) == []


def test_written_file_follows_the_umask(tmp_path):
    fastcnn.save({"epoch": 1}, tmp_path / "c.npz")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "c.npz").stat().st_mode & 0o777 == 0o666 & ~umask


# -- damaged files ---------------------------------------------------------------------------


def small_checkpoint():
    return {
        "model": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
        "opt": {"state": {0: {"step": 3}}, "groups": [{"lr": 0.1, "betas": (0.9, 0.999)}]},
        "epoch": 3,
        "history": [1.5, 2.0],
    }


def saved_bytes(tmp_path, suffix):
    path = tmp_path / f"good{suffix}"
    fastcnn.save(small_checkpoint(), path)
    return path.read_bytes()


def load_bytes(tmp_path, suffix, data, name):
    # A fresh file each time: overwriting one file thousands of times is slow here.
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(bytes(data))
    return fastcnn.load(path), path


@pytest.mark.parametrize("suffix", FORMATS)
def test_every_truncation_raises(tmp_path, suffix):
    data = saved_bytes(tmp_path, suffix)
    for length in range(len(data)):
        with pytest.raises(fastcnn.CheckpointError, match=r"cannot load checkpoint '.*cut"):
            load_bytes(tmp_path, suffix, data[:length], f"cut{length}")


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("mask", [0xFF, 0x01, 0x80])
def test_every_flipped_byte_raises(tmp_path, suffix, mask):
    """Each byte of the file altered in turn: never a silently different result."""
    data = saved_bytes(tmp_path, suffix)
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= mask
        with pytest.raises(fastcnn.CheckpointError, match=r"cannot load checkpoint '.*flip"):
            load_bytes(tmp_path, suffix, damaged, f"flip{position}")


def test_damage_messages_say_what_is_wrong(tmp_path):
    data = saved_bytes(tmp_path, ".npz")
    with pytest.raises(fastcnn.CheckpointError, match="damaged: the SHA-256 of its bytes"):
        load_bytes(tmp_path, ".npz", data[:100] + b"X" + data[101:], "a")
    with pytest.raises(fastcnn.CheckpointError, match="truncated or damaged: the checksum"):
        load_bytes(tmp_path, ".npz", data[:-10], "b")


def reseal(entries):
    """An .npz of ``entries`` with the seal fastcnn.io documents: the zip comment
    ``fastcnn-sha256:<hex>``, the SHA-256 of every byte before the hex digest."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in entries.items():
            with archive.open(name + ".npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
        archive.comment = b"fastcnn-sha256:" + b"0" * 64
    body = buffer.getvalue()[:-64]
    return body + hashlib.sha256(body).hexdigest().encode()


def entries_of(tmp_path):
    saved_bytes(tmp_path, ".npz")
    with np.load(tmp_path / "good.npz", allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def test_resealed_copy_loads(tmp_path):
    # The control for the tests below: re-sealing an unchanged archive gives a valid file.
    loaded, _ = load_bytes(tmp_path, ".npz", reseal(entries_of(tmp_path)), "same")
    assert_identical(loaded, small_checkpoint())


def test_extra_or_missing_array_is_refused(tmp_path):
    entries = entries_of(tmp_path)
    entries["intruder"] = np.zeros(3)
    with pytest.raises(fastcnn.CheckpointError, match=r"arrays its manifest does not list: \['in"):
        load_bytes(tmp_path, ".npz", reseal(entries), "extra")
    entries = entries_of(tmp_path)
    del entries["model/w"]
    with pytest.raises(fastcnn.CheckpointError, match="lacks the array 'model/w' that its manif"):
        load_bytes(tmp_path, ".npz", reseal(entries), "missing")


def test_tampered_array_fails_its_hash(tmp_path):
    entries = entries_of(tmp_path)
    entries["model/w"] = entries["model/w"] + 1
    with pytest.raises(fastcnn.CheckpointError, match="'model/w' fails its SHA-256 check"):
        load_bytes(tmp_path, ".npz", reseal(entries), "tampered")
    entries["model/w"] = entries["model/w"].astype(np.float64)
    with pytest.raises(fastcnn.CheckpointError, match="dtype float64.*manifest says float32"):
        load_bytes(tmp_path, ".npz", reseal(entries), "retyped")


def edited_manifest(tmp_path, edit):
    entries = entries_of(tmp_path)
    manifest = json.loads(entries["__fastcnn_manifest__"].tobytes())
    edit(manifest)
    entries["__fastcnn_manifest__"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    return reseal(entries)


def test_manifest_version_and_format_are_checked(tmp_path):
    newer = edited_manifest(tmp_path, lambda m: m.update(version=2))
    with pytest.raises(fastcnn.CheckpointError, match="format version 2; this fastcnn reads ver"):
        load_bytes(tmp_path, ".npz", newer, "newer")
    other = edited_manifest(tmp_path, lambda m: m.update(format="something-else"))
    with pytest.raises(fastcnn.CheckpointError, match="does not name the format 'fastcnn-check"):
        load_bytes(tmp_path, ".npz", other, "other")
    broken = edited_manifest(tmp_path, lambda m: m["root"].update(t="set"))
    with pytest.raises(fastcnn.CheckpointError, match="manifest is malformed.*unknown node type"):
        load_bytes(tmp_path, ".npz", broken, "broken")
    entries = entries_of(tmp_path)
    entries["__fastcnn_manifest__"] = np.frombuffer(b"{not json", np.uint8)
    with pytest.raises(fastcnn.CheckpointError, match="manifest is not valid JSON"):
        load_bytes(tmp_path, ".npz", reseal(entries), "json")


FOREIGN = {
    "foreign npz": (
        lambda: _npz_bytes(weights=np.ones(3)),
        r"zip/.npz archive not written by fastcnn.save \(it has no fastcnn manifest\)",
    ),
    "text": (lambda: b"epoch: 3\nloss: 0.5\n", "not a fastcnn checkpoint"),
    "empty": (lambda: b"", "not a fastcnn checkpoint"),
    "pickle": (
        lambda: pickle.dumps({"w": [1.0, 2.0]}, protocol=4),
        "is a pickle, not a fastcnn checkpoint; fastcnn never unpickles",
    ),
    "random": (
        lambda: np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "not a fastcnn checkpoint",
    ),
}


def _npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("name", FOREIGN)
def test_foreign_npz_files_are_refused(tmp_path, name):
    make, message = FOREIGN[name]
    with pytest.raises(fastcnn.CheckpointError, match=message):
        load_bytes(tmp_path, ".npz", make(), "foreign")


def test_torch_save_file_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2)}, tmp_path / "torch.npz")
    with pytest.raises(fastcnn.CheckpointError, match="not written by fastcnn.save"):
        fastcnn.load(tmp_path / "torch.npz")


def test_foreign_and_tampered_safetensors_are_refused(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    plain = safetensors_numpy.save({"w": np.ones(3, np.float32)})
    with pytest.raises(fastcnn.CheckpointError, match="safetensors file not written by fastcnn"):
        load_bytes(tmp_path, ".safetensors", plain, "plain")
    with pytest.raises(fastcnn.CheckpointError, match="not a readable safetensors file"):
        load_bytes(tmp_path, ".safetensors", b"epoch: 3\n", "text")
    data = saved_bytes(tmp_path, ".safetensors")
    tampered = data[:-4] + np.float32(9.0).tobytes()  # the last array element
    with pytest.raises(fastcnn.CheckpointError, match="'model/w' fails its SHA-256 check"):
        load_bytes(tmp_path, ".safetensors", tampered, "tampered")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        fastcnn.load(tmp_path / "nothing.npz")


# -- refused at save -------------------------------------------------------------------------


UNSAVABLE = [
    ({"w": np.array([{"a": 1}], dtype=object)}, TypeError, r"item \['w'\]: arrays of dtype object"),
    ({"w": np.array(["a", "b"])}, TypeError, r"dtype <U1 are not supported"),
    ({"w": np.ones(2, np.complex64)}, TypeError, "dtype complex64 are not supported"),
    ({"w": np.ones(2, np.longdouble)}, TypeError, "are not supported"),
    ({"w": np.ma.masked_array([1.0])}, TypeError, "MaskedArray is an ndarray subclass"),
    ({"w": {1, 2}}, TypeError, r"item \['w'\]: values of type set are not supported"),
    ({"p": Parameter(np.ones(1))}, TypeError, "values of type Parameter are not supported"),
    ({1.5: 1}, TypeError, "dict key 1.5 is a float; checkpoint dict keys must be str or int"),
    ({True: 1}, TypeError, "dict key True is a bool"),
    ({"a": [1, {(1, 2): 3}]}, TypeError, r"item \['a'\]\[1\]: dict key \(1, 2\) is a tuple"),
    ({"b": b"bytes"}, TypeError, "values of type bytes"),
]


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("obj, error, message", UNSAVABLE, ids=str)
def test_unsavable_values_are_refused_and_nothing_is_written(tmp_path, suffix, obj, error, message):
    path = tmp_path / f"c{suffix}"
    with pytest.raises(error, match=message):
        fastcnn.save(obj, path)
    assert os.listdir(tmp_path) == []


def test_self_containing_structure_is_refused(tmp_path):
    loop = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(ValueError, match=r"item \['a'\]\[0\]: the structure contains itself"):
        fastcnn.save(loop, tmp_path / "loop.npz")
    shared = [1.0]
    fastcnn.save({"x": shared, "y": shared}, tmp_path / "shared.npz")  # sharing is not a loop
    assert fastcnn.load(tmp_path / "shared.npz") == {"x": [1.0], "y": [1.0]}


@pytest.mark.parametrize("function", ["save", "load"])
def test_unknown_suffix(tmp_path, function):
    args = ({"a": 1}, tmp_path / "c.pt") if function == "save" else (tmp_path / "c.pt",)
    with pytest.raises(
        ValueError,
        match=r"must end with one of .npz, .safetensors.*got suffix "
        r"'.pt'",
    ):
        getattr(fastcnn, function)(*args)


def test_safetensors_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"pip install fastcnn\[io\]"):
        fastcnn.save({"a": 1}, tmp_path / "c.safetensors")
    assert os.listdir(tmp_path) == []


def test_exports():
    assert issubclass(fastcnn.CheckpointError, Exception)
    assert fastcnn.save is fastcnn.io.save and fastcnn.load is fastcnn.io.load


@pytest.mark.parametrize("suffix", FORMATS)
def test_training_checkpoint_with_a_real_model_resumes_bit_for_bit(tmp_path, suffix):
    """Model, optimizer and scheduler state through one file: resuming changes nothing."""
    from fastcnn.models import LeNet5
    from fastcnn.nn import CrossEntropyLoss
    from fastcnn.optim.lr_scheduler import StepLR

    rng = np.random.default_rng(7)
    images = rng.standard_normal((4, 8, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, (4, 8))

    def build(seed):
        model = LeNet5(rng=seed)
        optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        return model, optimizer, StepLR(optimizer, step_size=2, gamma=0.5)

    def train(model, optimizer, scheduler, batches):
        loss_fn = CrossEntropyLoss()
        for x, y in batches:
            optimizer.zero_grad()
            loss_fn(model(x), y)
            model.backward(loss_fn.backward())
            optimizer.step()
            scheduler.step()

    batches = list(zip(images, labels, strict=True))
    model, optimizer, scheduler = build(0)
    train(model, optimizer, scheduler, batches[:2])
    path = tmp_path / f"lenet{suffix}"
    fastcnn.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": 2,
        },
        path,
    )
    train(model, optimizer, scheduler, batches[2:])

    checkpoint = fastcnn.load(path)
    resumed, resumed_optimizer, resumed_scheduler = build(1)  # other initial weights
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed_scheduler.load_state_dict(checkpoint["scheduler"])
    assert checkpoint["epoch"] == 2
    train(resumed, resumed_optimizer, resumed_scheduler, batches[2:])
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)
    assert resumed_scheduler.get_last_lr() == scheduler.get_last_lr()
