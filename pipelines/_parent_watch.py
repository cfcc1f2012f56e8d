"""Make a DALI source worker exit when the process that started it dies.

DALI's parallel external source runs the callable in ``multiprocessing`` worker processes. When the
trainer is killed with SIGKILL (OOM killer, ``kill -9``, a scheduler's hard stop) nothing tells those
workers: they are reparented (to pid 1 or a subreaper) and wait for tasks forever, each holding its
resident memory (~450 MB seen). PyTorch's DataLoader workers poll their parent for the same reason.

:func:`watch_parent_if_worker` is called by :class:`~vitdata.pipelines.source.EpochSource` on every
call; it does its work once per process and only in a DALI worker (the pipeline's own thread, in the
trainer's process, is never watched):

* the core is a daemon thread that compares ``os.getppid()`` with the parent pid recorded when the
  worker started, every ``POLL_S`` seconds, and ends the process with ``os._exit`` when it changed.
  It also catches a parent that died before the worker's first call (already reparented).
* ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux) makes the kernel end the worker at once, but the
  signal fires when the *thread* that forked the worker exits, not the process. It is set only where
  that thread is known to be the parent's main thread (``fork`` start from the main thread); with
  ``spawn``, or a fork from another thread, the watchdog alone acts (within ``POLL_S``).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading

from .worker_signals import follow_trainer_signals

POLL_S = 0.5                    # watchdog period: a dead parent is noticed within this many seconds
EXIT_CODE = 70                  # the worker's exit status after its parent died (EX_SOFTWARE)
_PR_SET_PDEATHSIG = 1

# Recorded when this module is imported. A worker forked from a process that had imported it inherits
# these values, so the worker can tell which thread of its parent forked it (see _forked_by_main_thread).
_IMPORT_PID = os.getpid()
_IMPORT_MAIN_IDENT = threading.main_thread().ident

_done_pid: int | None = None    # the process in which the check below has run
_lock = threading.Lock()


def watch_parent_if_worker() -> None:
    """Once per process: in a DALI source worker, arrange to exit when the parent dies. Cheap after the
    first call (one ``os.getpid()``)."""
    global _done_pid
    pid = os.getpid()
    if _done_pid == pid:
        return
    with _lock:
        if _done_pid == pid:
            return
        parent = _dali_worker_parent()
        if parent is not None:
            start_parent_watch(parent)
            follow_trainer_signals()   # SIGTERM/SIGINT are left to a trainer that stops cleanly on them
        _done_pid = pid


def _dali_worker_parent() -> int | None:
    """The parent pid recorded by ``multiprocessing`` when this DALI worker was started, or None when this
    process is not a DALI worker (DALI starts its workers as ``Process(target=nvidia.dali._multiproc.worker.worker)``)."""
    proc = multiprocessing.current_process()
    target = getattr(proc, "_target", None)
    if not getattr(target, "__module__", "").startswith("nvidia.dali"):
        return None
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else None


def start_parent_watch(parent: int, poll_s: float = POLL_S, use_prctl: bool | None = None) -> None:
    """End this process when its parent ``parent`` (a pid) is gone: at once if it already is, else from a
    daemon thread polling ``os.getppid()`` every ``poll_s`` seconds (plus the kernel's parent-death signal
    where safe; ``use_prctl=None`` decides, False never sets it)."""
    if os.getppid() != parent:
        _parent_gone(parent)
    if use_prctl is None:
        use_prctl = _forked_by_main_thread(parent)
    if use_prctl and _set_pdeathsig(signal.SIGKILL) and os.getppid() != parent:
        _parent_gone(parent)     # died between the check above and prctl: the signal will not come
    t = threading.Thread(target=_watch, args=(parent, poll_s), name="vitdata-parent-watch", daemon=True)
    t.start()


def _watch(parent: int, poll_s: float) -> None:
    import time

    while True:
        time.sleep(poll_s)
        if os.getppid() != parent:
            _parent_gone(parent)


def _parent_gone(parent: int) -> None:
    try:
        os.write(2, f"vitdata: source worker {os.getpid()}: its parent (pid {parent}) is gone; exiting\n".encode())
    except OSError:
        pass
    os._exit(EXIT_CODE)


def _forked_by_main_thread(parent: int) -> bool:
    """True when this process was forked (not spawned) from ``parent``'s main thread. After a fork the
    surviving thread keeps the forking thread's ident and becomes this process's main thread; the
    module globals are the parent's, recorded at its import."""
    if not sys.platform.startswith("linux") or _IMPORT_PID != parent:
        return False      # spawned (this module was imported afresh here), or not Linux
    return threading.main_thread().ident == _IMPORT_MAIN_IDENT


def _set_pdeathsig(sig: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
