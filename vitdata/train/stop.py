"""Ending a training run cleanly on SIGTERM or SIGINT (docs/reliability.md J1-J3).

Schedulers and ``torchrun`` send SIGTERM to end a job (preemption, a time limit, ``scancel``) and then wait
about 30 s before SIGKILL (torchrun's ``--shutdown-timeout``, SLURM's ``KillWait``); a user presses Ctrl-C
(SIGINT). :class:`StopSignal` turns the first such signal into a request: the loop finishes the step in
hand, saves a checkpoint at that step boundary and ends with exit status :func:`exit_status` (``128 +`` the
signal's number: 143 after SIGTERM, 130 after Ctrl-C, the status a shell gives a process that signal ended),
after one line naming the folder to resume from. The handler puts both signals back to their default
action, so a second signal ends the process at once, whatever it is doing (its data workers follow: they
watch their parent).

The trainer's data workers usually receive the same signal (Ctrl-C reaches the terminal's process group,
torchrun and SLURM signal every process). They must live until the step in flight is delivered:
:meth:`StopSignal.install` names a stop mark in the environment the workers inherit, a file to which each
signal the trainer receives appends its number the moment it arrives (``signal.set_wakeup_fd``), and the
workers let a SIGTERM pass when the trainer got it too (``vitdata.pipelines.worker_signals``). Workers
forked from the trainer take that policy at the fork; spawned ones when they start working.

Several ranks (``torchrun``): every rank must stop at the same step, or the ranks that go on wait in a
collective for one that saved and left. :meth:`StopSignal.agreed` is that agreement: at every step boundary
each rank puts the number of the signal it received (0: none) into a one-element all_reduce (MAX), so all
ranks see the same answer at the same step, also a rank that received nothing (a signal sent to one process
only). The all_reduce runs on a gloo process group, on the host: under NCCL a separate gloo group, so the
check never waits for the GPU and adds no sync point to the step (a GPU tensor would need a ``.item()``
each step). It costs one small host collective per step: 0.05-0.2 ms between two processes on one machine
(``vitdata.train.stop`` measure in ``tests/train/test_stop.py``), against steps of tens of milliseconds or
more on a GPU. Checking every step rather than every N keeps the stop within one step of the signal, which
a 30 s grace period needs when steps are slow.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading

import torch
import torch.distributed as dist

from vitdata.pipelines.worker_signals import STOP_MARK_ENV, follow_trainer_signals

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: int) -> int:
    """The exit status of a run stopped by signal ``signum``: 128 + its number (shells report a process
    ended by a signal the same way)."""
    return 128 + int(signum)


class StopSignal:
    """The first SIGTERM or SIGINT as a stop request (see the module docstring).

    ``install()`` sets the handlers, only in the main thread (Python runs signal handlers there); elsewhere
    it does nothing and :attr:`signum` stays 0 unless :meth:`request` is called. ``close()`` puts the
    previous handlers back. ``group``: the process group of the agreement (None: one process, no
    collective)."""

    def __init__(self, group=None, world: int = 1):
        self.signum = 0
        self.group, self.world = group, world
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()
        self._mark: tuple[int, str, int, str | None] | None = None   # fd, path, previous wakeup fd, env

    def install(self) -> "StopSignal":
        global _active
        if threading.current_thread() is not threading.main_thread():
            return self
        fd, path = tempfile.mkstemp(prefix="vitdata-stop-")
        os.set_blocking(fd, False)   # set_wakeup_fd's demand (a regular file never blocks)
        self._mark = (fd, path, signal.set_wakeup_fd(fd, warn_on_full_buffer=False), os.environ.get(STOP_MARK_ENV))
        os.environ[STOP_MARK_ENV] = path
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        _active = self
        return self

    def close(self) -> None:
        global _active
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if self._mark is not None:
            fd, path, wakeup, env = self._mark
            self._mark = None
            signal.set_wakeup_fd(wakeup)
            if env is None:
                os.environ.pop(STOP_MARK_ENV, None)
            else:
                os.environ[STOP_MARK_ENV] = env
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
        if _active is self:
            _active = None

    def request(self, signum: int) -> None:
        """Record a stop request for ``signum`` (what the handler does; also for tests and embedders)."""
        self.signum = self.signum or int(signum)

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:   # a forked process that has not taken the workers' policy yet
            _in_forked_child()
            if signum == signal.SIGTERM:
                from vitdata.pipelines.worker_signals import on_sigterm
                on_sigterm(signum)
            return
        self.request(signum)
        for sig in SIGNALS:   # a second signal: the default action, at once
            signal.signal(sig, signal.SIG_DFL)
        name = signal.Signals(signum).name
        try:   # os.write: the main thread may be inside a print to the same stream
            os.write(2, f"\nvitdata train: {name} received: stopping with a checkpoint at the next step boundary "
                        f"(send it again to stop at once, without one)\n".encode())
        except OSError:
            pass

    def agreed(self) -> int:
        """The signal number every rank stops for (0: go on). A collective when there is a group: every
        rank must call it at the same point."""
        if self.group is None:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return int(flag[0])


_active: StopSignal | None = None   # the installed one, in the trainer's process


def _in_forked_child() -> None:
    """A child forked from a trainer with a :class:`StopSignal`: stop writing the trainer's stop mark (the
    wakeup fd is inherited) and take the data workers' signal policy."""
    if _active is None:
        return
    with contextlib.suppress(ValueError, OSError):   # ValueError: not the main thread
        signal.set_wakeup_fd(-1)
    follow_trainer_signals()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_forked_child)


def stop_group(world: int, timeout):
    """The process group :meth:`StopSignal.agreed` reduces over: None for one process, the default group
    when it is gloo, else a new gloo group over every rank (a collective: every rank calls this)."""
    if world <= 1:
        return None
    if dist.get_backend() == "gloo":
        return dist.group.WORLD
    return dist.new_group(backend="gloo", timeout=timeout)
