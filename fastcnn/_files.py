"""Atomic file writes, shared by checkpoints (io), datasets (data) and training (train).

A file written here holds either its old bytes or its new ones, never a mix: the data goes
to a temporary file in the same directory, which is flushed and fsynced and then renamed
over the target (``os.replace``), and the rename itself is made durable.
"""

from __future__ import annotations

import contextlib
import os
import secrets

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old or its new bytes.

    The temporary file sits in the same directory (``os.replace`` is atomic only within a
    file system) and is created with ``O_EXCL`` and mode 0o666, so the usual umask applies.
    Whatever goes wrong (a full disk, a KeyboardInterrupt), the temporary file is removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:  # including KeyboardInterrupt: never leave the temporary behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(directory)


def fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX); not possible, nor needed, on Windows."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
