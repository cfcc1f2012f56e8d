"""Atomic file writes: a temp file in the target directory, fsync, rename, fsync of the directory.

A crash leaves the old file or the new one under the final name, never a partial file; a full disk
(ENOSPC, EFBIG) raises an OSError naming the path and errno and leaves the previous file untouched.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import os
import tempfile
from typing import Callable, IO


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None] | bytes) -> None:
    """Write ``path`` atomically. ``write`` is the bytes, or a callable that writes to a binary file object."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(write):
                write(f)
            else:
                f.write(write)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        code = _errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "?"
        raise OSError(e.errno, f"could not write {path} ({code}): {e.strerror or e}", path) from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    _remove_stale_temps(directory, os.path.basename(path))


def _remove_stale_temps(directory: str, name: str) -> None:
    """Temp files of earlier writes of ``name`` that were killed mid-write; the rename above committed
    ours, so any other ``.NAME.*.tmp`` left here is litter from a crash."""
    prefix = "." + name + "."
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
