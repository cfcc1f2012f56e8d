"""Persistence primitives: atomic file writes, and state as plain JSON types.

Atomic writes: a temp file in the target directory, fsync, rename, fsync of the directory. A new file gets
the mode ``open(path, "w")`` would give it (0666 minus the umask); a replaced file keeps its permission bits.

A crash leaves the old file or the new one under the final name, never a partial file; a full disk
(ENOSPC, EFBIG) raises an OSError naming the path and errno and leaves the previous file untouched.

Several writers of one file at once (two ranks caching the same index, threads of one process) each
write their own uniquely named temp file; the last rename wins and a reader sees one whole version.
Each writer holds an exclusive ``flock`` on its temp file until its rename: the clean-up of temp files
left by killed writers removes only those whose lock it can take (a dead writer's lock went with it),
never a live writer's.

Plain JSON state: NumPy arrays inside a state dict become tagged base64 text and back.

``to_json(state)`` walks dicts, lists and tuples and replaces every ``np.ndarray`` by
``{"__ndarray__": <base64 of the C-order bytes>, "dtype": "<f4", "shape": [N]}`` and every NumPy scalar by
its Python value, so ``json.dumps`` takes the result as it is. ``from_json`` undoes it (dtype and shape
exactly, so a table loaded from JSON passes the same dtype checks as one loaded from memory). Base64 costs
4/3 of the raw bytes: the oracle table of ImageNet-1K (32 MB) is about 43 MB of text.
"""
from __future__ import annotations

import base64
import contextlib
import errno as _errno
import os
import secrets
import threading
from typing import IO, Any, Callable

import numpy as np

try:
    import fcntl
except ImportError:   # not POSIX: no locks, so no clean-up of other writers' temp files either
    fcntl = None

# Temp files of this process's writes in progress. The clean-up skips them even where flock is emulated
# with POSIX record locks (NFS), which do not conflict between threads of one process.
_live: set[str] = set()
_live_lock = threading.Lock()


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
    name = os.path.basename(path)
    try:
        fd, tmp = _locked_temp(directory, name)
    except OSError as e:   # a read-only or full folder: name the file being written, not the temp file
        code = _errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "?"
        raise OSError(e.errno, f"could not write {path} ({code}): {e.strerror or e}", path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(write):
                write(f)
            else:
                f.write(write)
            f.flush()
            _keep_mode(f.fileno(), path)
            os.fsync(f.fileno())
            os.replace(tmp, path)    # while our lock is held: the clean-up below never takes a live temp
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        code = _errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "?"
        raise OSError(e.errno, f"could not write {path} ({code}): {e.strerror or e}", path) from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        with _live_lock:
            _live.discard(tmp)
    _fsync_dir(directory)
    _remove_stale_temps(directory, name)


def _create_temp(directory: str, name: str) -> tuple[int, str]:
    """A new, empty ``.NAME.<random>.tmp`` in ``directory``, opened for writing.

    Created with mode 0666 minus the process's umask (and the folder's default ACL), as ``open(path, "w")``
    would create ``NAME``: ``tempfile.mkstemp`` creates 0600, which the rename would carry to the final file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise OSError(_errno.EEXIST, f"could not create a temp file for {os.path.join(directory, name)}")


def _keep_mode(fd: int, path: str) -> None:
    """Give the new file the permission bits of the file it replaces, as rewriting that file in place keeps
    them (a new file keeps the umask's mode from :func:`_create_temp`)."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fchmod(fd, mode)


def _locked_temp(directory: str, name: str) -> tuple[int, str]:
    """A new temp file ``.NAME.<random>.tmp`` in ``directory``, open and exclusively locked by us.

    Between creating it and ``flock`` another writer's clean-up may take the lock and remove the file:
    then the name no longer leads to our descriptor, and we start over with a new name."""
    for _ in range(100):
        fd, tmp = _create_temp(directory, name)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass      # a filesystem without locks (ENOLCK): write unlocked; its clean-up takes nothing
        if _same_file(fd, tmp):
            with _live_lock:
                _live.add(tmp)
            return fd, tmp
        os.close(fd)
    raise OSError(_errno.EAGAIN, f"could not create a temp file for {os.path.join(directory, name)}")


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _remove_stale_temps(directory: str, name: str) -> None:
    """Remove temp files of earlier writes of ``name`` that were killed mid-write. A temp file whose lock
    is held belongs to a writer still at work (another process or thread) and is left alone."""
    if fcntl is None:
        return
    prefix = "." + name + "."
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            with _live_lock:
                if entry.path in _live:
                    continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same_file(fd, entry.path):   # still the file we locked, not a renamed or new one
                    os.unlink(entry.path)
            except OSError:
                pass                             # locked: a live writer's
            finally:
                os.close(fd)


# The key of an encoded array.
TAG = "__ndarray__"


def to_json(obj: Any) -> Any:
    """A copy of ``obj`` with arrays and NumPy scalars replaced by JSON types (see the module docstring)."""
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        if a.dtype == object:
            raise TypeError("an object array cannot be stored as plain data")
        return {TAG: base64.b64encode(a.tobytes()).decode("ascii"), "dtype": a.dtype.str, "shape": list(a.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


def from_json(obj: Any) -> Any:
    """Inverse of :func:`to_json`; anything else (arrays included) passes through unchanged."""
    if isinstance(obj, dict):
        if TAG in obj and set(obj) == {TAG, "dtype", "shape"}:
            dtype = np.dtype(obj["dtype"])
            if dtype == object:
                raise ValueError("an object dtype cannot be read from plain data")
            raw = base64.b64decode(obj[TAG].encode("ascii"), validate=True)
            return np.frombuffer(raw, dtype=dtype).reshape(obj["shape"]).copy()
        return {k: from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    return obj


def cache_dir() -> str:
    """vitdata's cache folder: ``$VITDATA_CACHE``, default ``~/.cache/vitdata`` (indexes, inflated shards, generated
    and split datasets)."""
    return os.environ.get("VITDATA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "vitdata"))
