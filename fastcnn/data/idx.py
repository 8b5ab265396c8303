"""Read and write IDX files, the format of the MNIST distribution (optionally gzip-compressed).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values in C order, big-endian. MNIST images
are ``0x00000803`` (uint8, 3 dimensions: 2051) and labels ``0x00000801`` (uint8, 1
dimension: 2049).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._files import atomic_write

__all__ = ["read_idx", "write_idx"]

# IDX type code -> big-endian NumPy dtype.
_TYPE_CODES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dtype.kind, dtype.itemsize): code for code, dtype in _TYPE_CODES.items()}


def _read_bytes(path):
    """The file's bytes, decompressed if its name ends with ``.gz``."""
    path = os.fspath(path)
    if not path.endswith(".gz"):
        with open(path, "rb") as file:
            return file.read()
    try:
        with gzip.open(path, "rb") as file:
            return file.read()
    except EOFError as error:
        raise ValueError(
            f"{path}: the gzip stream is truncated ({error}); delete the file and download it again"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path}: not a valid gzip file ({error})") from None


def parse_idx(raw: bytes, name: str = "<bytes>") -> tuple[int, NDArray[Any]]:
    """Decode the bytes of an IDX file (already decompressed) into an array.

    Parameters
    ----------
    raw : bytes
        The whole file.
    name : str
        Used in error messages (the file name).

    Returns
    -------
    magic : int
        The magic number (e.g. 2051 for MNIST images).
    array : numpy.ndarray
        The values, in the native byte order, shape from the header.
    """
    if len(raw) < 4:
        raise ValueError(
            f"{name}: too short for an IDX file ({len(raw)} bytes, need a 4-byte header)"
        )
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    magic = struct.unpack(">I", raw[:4])[0]
    if zero != 0 or code not in _TYPE_CODES or ndim == 0:
        raise ValueError(
            f"{name}: not an IDX file (magic number 0x{magic:08x}; an IDX file starts with two "
            "zero bytes, a type code 0x08-0x0e and the number of dimensions)"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{name}: truncated IDX header ({len(raw)} bytes, need {header_size})")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = _TYPE_CODES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_size
    if actual < expected:
        raise ValueError(
            f"{name}: truncated: the header promises shape {shape} ({expected} bytes of data) "
            f"but the file holds {actual}"
        )
    if actual > expected:
        raise ValueError(
            f"{name}: {actual - expected} unexpected trailing bytes after the data of shape {shape}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return magic, array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> tuple[int, NDArray[Any]]:
    """Read an IDX file (raw, or gzip-compressed when the name ends with ``.gz``).

    Returns
    -------
    magic : int
        The magic number from the header.
    array : numpy.ndarray
        The data, shaped as the header says.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Not an IDX file, a truncated file or gzip stream, or trailing bytes; the message names
        the file.
    """
    return parse_idx(_read_bytes(path), name=os.fspath(path))


def idx_bytes(array: ArrayLike) -> bytes:
    """The bytes of an IDX file holding ``array`` (uint8, int8, int16, int32, float32/64)."""
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None or array.ndim == 0 or array.ndim > 255:
        raise TypeError(
            f"IDX cannot store a {array.ndim}-d array of dtype {array.dtype}; use uint8, int8, "
            "int16, int32, float32 or float64 with 1 to 255 dimensions"
        )
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=_TYPE_CODES[code]).tobytes()


def write_idx(path: str | os.PathLike[str], array: ArrayLike) -> None:
    """Write ``array`` as an IDX file; gzip-compressed (reproducibly) if ``path`` ends with ``.gz``.

    The gzip header carries no time stamp or file name, so the same array always gives the
    same bytes. The file is replaced atomically: a crash never leaves half a file behind.
    """
    data = idx_bytes(array)
    path = os.fspath(path)
    if path.endswith(".gz"):
        # No file name or time stamp in the header: the bytes depend on the data alone.
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as compressed:
            compressed.write(data)
        data = buffer.getvalue()
    atomic_write(path, data)
