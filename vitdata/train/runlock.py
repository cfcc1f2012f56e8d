"""One writer per run folder: the lock file ``OUT/run.lock`` (docs/reliability.md J6).

Two runs writing one folder would interleave their checkpoints, logs and results (and a reader would meet
parts of one run's checkpoint under the other's manifest). ``vitdata train`` takes an exclusive ``flock``
on ``OUT/run.lock`` before it writes anything there, a resumed run on the folder it writes into, and holds
it until it ends; the file holds the holder's pid, host and start time, so a second run is refused with
one line naming them. The kernel releases the lock when the holder's process ends, however it ends (a
crash, ``kill -9``): a lock file left behind is free, never stale. The file itself stays (removing it
would let a third run lock a new file while a second still holds the old one).

Under ``torchrun`` rank 0 takes the lock (it is the rank that writes) and tells the others whether it got
it, so every rank stops with the same error. A folder that cannot be written (read-only, no permission,
its parent missing) is refused here too, naming the folder and the cause, before anything else is done.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time

import torch.distributed as dist

from vitdata.errors import ConfigError, OutputError

try:
    import fcntl
except ImportError:   # not POSIX: no lock (the run still works, unguarded)
    fcntl = None

LOCK_NAME = "run.lock"
# A holder that died may leave the lock held for a moment by its data workers (forked with the descriptor):
# they watch their parent and exit within 0.5 s (DALI) or ~5 s (PyTorch's DataLoader).
DEAD_HOLDER_WAIT_S = 10.0


class RunLock:
    """The exclusive lock of one run folder (see the module docstring). ``release()`` is idempotent."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock; ConfigError (field ``out``) naming the holder when another run has it, OutputError
        naming the folder when it cannot be written."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise _unwritable(self.folder, self.path, e) from e
        deadline = time.monotonic() + DEAD_HOLDER_WAIT_S
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if _holder_dead(holder) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                os.close(fd)
                raise ConfigError(f"run folder {self.folder} is in use by another vitdata train "
                                  f"({_describe(holder)}; lock {self.path}): wait for it to end, or write this run "
                                  f"elsewhere with --out", ("out",)) from None
            except OSError:
                break   # a filesystem without locks (ENOLCK): unguarded, as without fcntl
        try:
            record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        except OSError as e:
            os.close(fd)
            raise _unwritable(self.folder, self.path, e) from e
        self.fd = fd
        return self

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def lock_run(folder: str, rank: int, world: int) -> RunLock | None:
    """Rank 0 locks ``folder`` (see :class:`RunLock`); with several ranks every rank learns the outcome (a
    collective) and raises the same error. Returns rank 0's lock, None on the other ranks."""
    lock, failure = None, None
    if rank == 0:
        try:
            lock = RunLock(folder).acquire()
        except (ConfigError, OutputError) as e:
            failure = e
    if world > 1:
        box = [None if failure is None else (isinstance(failure, ConfigError), str(failure))]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and failure is None:
            config_error, text = box[0]
            failure = ConfigError(text.removeprefix("[out] "), ("out",)) if config_error else OutputError(text)
    if failure is not None:
        raise failure
    return lock


def _unwritable(folder: str, path: str, e: OSError) -> OutputError:
    code = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "?"
    return OutputError(f"cannot write into the run folder {folder}: creating {path} failed ({code}: "
                       f"{e.strerror or e}); choose a writable folder with --out", errno=e.errno)


def _read_holder(fd: int) -> dict:
    for _ in range(10):   # the holder writes its record right after locking
        try:
            raw = os.pread(fd, 4096, 0)
            if raw:
                return dict(json.loads(raw))
        except (OSError, ValueError, TypeError):
            pass
        time.sleep(0.05)
    return {}


def _holder_dead(holder: dict) -> bool:
    """Whether the recorded holder ran on this host and has ended (its workers may still hold the lock)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _describe(holder: dict) -> str:
    if not holder:
        return "pid unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
