"""Checkpoints: ``save`` and ``load`` state dicts and nested structures without pickle.

A checkpoint is a dict (or list) of state dicts, arrays and plain values, e.g.
``{"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}``. Two formats,
chosen by the file's suffix:

``.npz``
    A zip archive of ``.npy`` arrays (``np.load`` reads it) plus a JSON *manifest* stored
    as a uint8 array named ``__fastcnn_manifest__``. The archive's zip comment seals the
    file: ``fastcnn-sha256:`` and the SHA-256 of every byte before the digest, so any
    damage anywhere in the file is detected.
``.safetensors``
    The safetensors format (needs ``pip install fastcnn[io]``); the manifest and its
    SHA-256 are in the header's metadata. A flat state dict keeps its keys as tensor names,
    so other safetensors readers (``safetensors.torch.load_file``) can read it too.

The manifest records the format name and version and the nested structure: dicts (str or
int keys, which come back with their type), lists, tuples, None, bools, ints, floats
(stored exactly, as ``float.hex``), strs, and for every array its dtype, shape and the
SHA-256 of its bytes (C order, little-endian). ``load`` checks all of these, so a
truncated, damaged, tampered-with or foreign file raises ``CheckpointError`` instead of
giving different values.

Writes go through ``fastcnn._files.atomic_write``: a temporary file in the target's
directory, flushed, fsynced and renamed over the target, so a crash leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import os
import zipfile
from typing import Any

import numpy as np

from fastcnn._files import atomic_write

__all__ = ["CheckpointError", "load", "save"]

FORMAT_NAME = "fastcnn-checkpoint"
FORMAT_VERSION = 1
SUFFIXES = (".npz", ".safetensors")
MANIFEST_NAME = "__fastcnn_manifest__"  # the npz entry; safetensors metadata key
MANIFEST_HASH_NAME = "__fastcnn_manifest_sha256__"  # safetensors metadata key
SEAL_PREFIX = b"fastcnn-sha256:"
DIGEST_LENGTH = 64  # hex characters of a SHA-256
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so equal checkpoints are equal files


class CheckpointError(Exception):
    """A file that is not a loadable fastcnn checkpoint.

    Raised by ``load`` for a truncated or damaged file, one whose contents fail their
    SHA-256 checks, and a file not written by ``fastcnn.save`` (another ``.npz``, a pickle,
    any other file). The message names the path and the cause. A missing file raises
    ``FileNotFoundError`` instead, as ``open`` does: nothing is wrong with any checkpoint.
    """


class _Invalid(Exception):
    """Why a file is not a valid checkpoint; ``load`` adds the path."""


def save(obj: object, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` to ``path`` (``.npz`` or ``.safetensors``) atomically, without pickle.

    Parameters
    ----------
    obj : dict, list, tuple, numpy array or plain value
        Nested dicts (str or int keys), lists and tuples of numpy arrays (bool, int, uint
        or float of 1 to 8 bytes) or numpy scalars, and None, bool, int, float and str.
    path : str or os.PathLike
        Target file; its suffix picks the format. Replaced atomically if it exists.

    Raises
    ------
    ValueError
        If the suffix is not ``.npz`` or ``.safetensors``, or ``obj`` contains itself.
    TypeError
        If ``obj`` holds anything else: an object (or string, complex, ...) array, a key
        that is not str or int, another type of value. Nothing is written.
    ImportError
        For ``.safetensors`` when the ``safetensors`` package is not installed.

    Examples
    --------
    >>> fastcnn.save({"model": model.state_dict(), "epoch": 3}, "ckpt.npz")  # doctest: +SKIP
    """
    path = os.fspath(path)
    writer = _WRITERS[_suffix(path)]
    root, arrays = _Encoder().encode(obj)
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "root": root}
    manifest_bytes = json.dumps(manifest, separators=(",", ":"), allow_nan=False).encode()
    atomic_write(path, writer(manifest_bytes, arrays))


def load(path: str | os.PathLike[str]) -> Any:
    """Read a checkpoint written by ``save``, checking it completely first.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` or ``.safetensors`` file written by ``fastcnn.save``.

    Returns
    -------
    object
        The saved structure: dicts with their str/int keys, lists, tuples, plain values,
        and writable numpy arrays (numpy scalars for saved numpy scalars) with the saved
        dtypes and shapes.

    Raises
    ------
    CheckpointError
        If the file is truncated, damaged, tampered with, or not a fastcnn checkpoint.
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the suffix is not ``.npz`` or ``.safetensors``.
    """
    path = os.fspath(path)
    reader = _READERS[_suffix(path)]
    with open(path, "rb") as file:
        data = file.read()
    try:
        manifest_bytes, arrays = reader(data)
        return _decode_manifest(manifest_bytes, arrays)
    except _Invalid as error:
        raise CheckpointError(f"cannot load checkpoint {path!r}: {error}") from error.__cause__


def _suffix(path):
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"checkpoint path {path!r} must end with one of {', '.join(SUFFIXES)} "
            f"(it picks the file format), got suffix {suffix!r}"
        )
    return suffix


# -- encoding: Python structure -> manifest + arrays ----------------------------------------


class _Encoder:
    """Turns a nested structure into a JSON-able manifest tree and a dict of arrays."""

    def __init__(self):
        self.arrays = {}
        self._open_containers = set()  # ids on the current path, to refuse cycles

    def encode(self, obj):
        return self._node(obj, ()), self.arrays

    def _node(self, obj, path):
        if isinstance(obj, np.ndarray) or (
            isinstance(obj, np.generic) and not isinstance(obj, str)
        ):
            return self._array_node(obj, path)  # numpy scalars too, to keep their dtype
        if obj is None:
            return {"t": "none"}
        if isinstance(obj, bool):
            return {"t": "bool", "v": obj}
        if isinstance(obj, numbers.Integral):
            return {"t": "int", "v": int(obj)}
        if isinstance(obj, float):
            return {"t": "float", "v": float(obj).hex()}
        if isinstance(obj, str):
            return {"t": "str", "v": obj}
        if isinstance(obj, (dict, list, tuple)):
            return self._container_node(obj, path)
        raise TypeError(
            f"cannot save {_where(path)}: values of type {type(obj).__name__} are not "
            "supported (use dicts, lists, tuples, numpy arrays, None, bool, int, float, str)"
        )

    def _container_node(self, obj, path):
        if id(obj) in self._open_containers:
            raise ValueError(f"cannot save {_where(path)}: the structure contains itself")
        self._open_containers.add(id(obj))
        try:
            if isinstance(obj, dict):
                items = [
                    [*_encode_key(key, path), self._node(value, (*path, key))]
                    for key, value in obj.items()
                ]
                return {"t": "dict", "items": items}
            kind = "list" if isinstance(obj, list) else "tuple"
            return {"t": kind, "items": [self._node(v, (*path, i)) for i, v in enumerate(obj)]}
        finally:
            self._open_containers.discard(id(obj))

    def _array_node(self, obj, path):
        if isinstance(obj, np.ndarray) and type(obj) is not np.ndarray:
            raise TypeError(
                f"cannot save {_where(path)}: {type(obj).__name__} is an ndarray subclass; "
                "pass np.asarray(value) to save its plain array"
            )
        array = np.asarray(obj)
        _check_dtype(array.dtype, path)
        stored = _canonical(array)
        name = self._unique_name(_array_name(path))
        self.arrays[name] = stored
        node = {
            "t": "array",
            "name": name,
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "sha256": _digest(stored),
        }
        if isinstance(obj, np.generic):
            node["scalar"] = True
        return node

    def _unique_name(self, name):
        candidate, counter = name, 0
        while candidate in self.arrays or candidate in (MANIFEST_NAME, MANIFEST_HASH_NAME):
            counter += 1
            candidate = f"{name}#{counter}"
        return candidate


def _array_name(path):
    """A readable, unique-able name from the keys: ``model/conv1.weight``.

    Zip readers cut names at NUL and turn backslashes into slashes on Windows, so those
    (and other unprintable characters) become ``_``; the manifest maps names back anyway.
    """
    name = "/".join(str(part) for part in path) or "array"
    return "".join(char if char.isprintable() and char != "\\" else "_" for char in name)


def _encode_key(key, path):
    if isinstance(key, str):
        return ["str", key]
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return ["int", int(key)]
    raise TypeError(
        f"cannot save {_where(path)}: dict key {key!r} is a {type(key).__name__}; "
        "checkpoint dict keys must be str or int"
    )


def _where(path):
    return "the object" if not path else "item " + "".join(f"[{part!r}]" for part in path)


def _check_dtype(dtype, path):
    if dtype.kind not in "biuf" or dtype.itemsize not in (1, 2, 4, 8):
        raise TypeError(
            f"cannot save {_where(path)}: arrays of dtype {dtype} are not supported; "
            "checkpoints hold bool, int, uint and float (16/32/64-bit) arrays only, and "
            "never pickle objects"
        )


def _canonical(array):
    """The array as it is stored and hashed: C order, little-endian."""
    return np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")


def _digest(array):
    return hashlib.sha256(array.tobytes()).hexdigest()


# -- decoding: manifest + arrays -> Python structure ----------------------------------------


def _decode_manifest(manifest_bytes, arrays):
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _Invalid(f"its manifest is not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise _Invalid(f"its manifest does not name the format {FORMAT_NAME!r}")
    version = manifest.get("version")
    if version != FORMAT_VERSION:
        raise _Invalid(
            f"it has format version {version!r}; this fastcnn reads version {FORMAT_VERSION} "
            "(a newer fastcnn may read it)"
        )
    decoder = _Decoder(arrays)
    try:
        obj = decoder.node(manifest["root"])
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as error:
        raise _Invalid(f"its manifest is malformed ({type(error).__name__}: {error})") from error
    extra = sorted(set(arrays) - decoder.used)
    if extra:
        raise _Invalid(f"it holds arrays its manifest does not list: {extra}")
    return obj


class _Decoder:
    def __init__(self, arrays):
        self.arrays = arrays
        self.used = set()

    def node(self, node):
        kind = node["t"]
        if kind == "none":
            return None
        if kind == "float":
            return float.fromhex(node["v"])
        if kind in _PLAIN_TYPES:
            value = node["v"]
            if type(value) is not _PLAIN_TYPES[kind]:
                raise TypeError(f"a {kind} node holds {value!r}")
            return value
        if kind == "list":
            return [self.node(item) for item in node["items"]]
        if kind == "tuple":
            return tuple(self.node(item) for item in node["items"])
        if kind == "dict":
            return {_decode_key(key_type, key): self.node(v) for key_type, key, v in node["items"]}
        if kind == "array":
            return self.array(node)
        raise ValueError(f"unknown node type {kind!r}")

    def array(self, node):
        name = node["name"]
        if name not in self.arrays:
            raise _Invalid(f"it lacks the array {name!r} that its manifest lists")
        if name in self.used:
            raise ValueError(f"array {name!r} is listed twice")
        self.used.add(name)
        stored = self.arrays[name]
        dtype, shape = np.dtype(node["dtype"]), tuple(node["shape"])
        if stored.dtype != dtype.newbyteorder("<") or stored.shape != shape:
            raise _Invalid(
                f"array {name!r} has dtype {stored.dtype} and shape {stored.shape}, but its "
                f"manifest says {dtype} and {shape}"
            )
        if _digest(stored) != node["sha256"]:
            raise _Invalid(f"array {name!r} fails its SHA-256 check: its data was changed")
        array = np.array(stored, dtype=dtype, copy=True)  # writable, in the saved byte order
        return array[()] if node.get("scalar") else array


_PLAIN_TYPES = {"bool": bool, "int": int, "str": str}  # stored as themselves in JSON


def _decode_key(key_type, key):
    if key_type not in ("str", "int") or type(key) is not _PLAIN_TYPES[key_type]:
        raise ValueError(f"bad dict key {key_type} {key!r}")
    return key


# -- .npz ---------------------------------------------------------------------------------


def _write_npz(manifest_bytes, arrays):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        entries = {MANIFEST_NAME: np.frombuffer(manifest_bytes, np.uint8), **arrays}
        for name, array in entries.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=ZIP_TIMESTAMP)
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
        archive.comment = SEAL_PREFIX + b"0" * DIGEST_LENGTH  # placeholder, same length
    data = buffer.getvalue()
    sealed = data[:-DIGEST_LENGTH]
    return sealed + hashlib.sha256(sealed).hexdigest().encode()


def _read_npz(data):
    _check_seal(data)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            if MANIFEST_NAME not in archive.files:
                raise _Invalid(f"it has no {MANIFEST_NAME!r} entry")
            arrays = {name: archive[name] for name in archive.files}
    except _Invalid:
        raise
    except Exception as error:  # anything np.load raises on a file it cannot read
        raise _Invalid(f"it is not a readable .npz archive ({error})") from error
    manifest = arrays.pop(MANIFEST_NAME)
    if manifest.dtype != np.uint8 or manifest.ndim != 1:
        raise _Invalid(f"its {MANIFEST_NAME!r} entry is not a 1-d uint8 array")
    return manifest.tobytes(), arrays


def _check_seal(data):
    """Check the file's own SHA-256, or say why the file is not a sealed checkpoint."""
    tail = data[-(len(SEAL_PREFIX) + DIGEST_LENGTH) :]
    if tail.startswith(SEAL_PREFIX):
        expected = tail[len(SEAL_PREFIX) :]
        actual = hashlib.sha256(data[:-DIGEST_LENGTH]).hexdigest().encode()
        if actual == expected:
            return
        raise _Invalid(
            "it is damaged: the SHA-256 of its bytes does not match the checksum it carries"
        )
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise _Invalid(
            "it is a pickle, not a fastcnn checkpoint; fastcnn never unpickles files (loading "
            "a pickle can run arbitrary code)"
        )
    if MANIFEST_NAME.encode() in data:
        raise _Invalid(
            "it is truncated or damaged: the checksum fastcnn.save puts at its end is missing"
        )
    if data.startswith(b"PK"):
        raise _Invalid(
            "it is a zip/.npz archive not written by fastcnn.save (it has no fastcnn manifest)"
        )
    raise _Invalid("it is not a fastcnn checkpoint (not an .npz archive written by fastcnn.save)")


# -- .safetensors -------------------------------------------------------------------------


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError as error:
        raise ImportError(
            "saving or loading .safetensors checkpoints needs the safetensors package: "
            "pip install fastcnn[io] (or use a .npz path)"
        ) from error
    return safetensors.numpy


def _write_safetensors(manifest_bytes, arrays):
    metadata = {
        MANIFEST_NAME: manifest_bytes.decode(),
        MANIFEST_HASH_NAME: hashlib.sha256(manifest_bytes).hexdigest(),
    }
    return _safetensors_numpy().save(arrays, metadata=metadata)


def _read_safetensors(data):
    safetensors_numpy = _safetensors_numpy()
    try:
        arrays = safetensors_numpy.load(data)
        header_length = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_length]).get("__metadata__") or {}
    except Exception as error:  # anything safetensors raises on a file it cannot read
        raise _Invalid(f"it is not a readable safetensors file ({error})") from error
    manifest = metadata.get(MANIFEST_NAME)
    if manifest is None:
        raise _Invalid(
            "it is a safetensors file not written by fastcnn.save (its metadata has no "
            "fastcnn manifest)"
        )
    manifest_bytes = manifest.encode()
    if hashlib.sha256(manifest_bytes).hexdigest() != metadata.get(MANIFEST_HASH_NAME):
        raise _Invalid("it is damaged: its manifest fails its SHA-256 check")
    return manifest_bytes, arrays


_WRITERS = {".npz": _write_npz, ".safetensors": _write_safetensors}
_READERS = {".npz": _read_npz, ".safetensors": _read_safetensors}
