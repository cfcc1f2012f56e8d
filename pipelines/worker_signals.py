"""Data workers leave SIGTERM and SIGINT to the trainer that stops cleanly on them (docs/reliability.md J2).

``vitdata train`` stops at a step boundary with a checkpoint on its first SIGTERM or SIGINT
(:mod:`vitdata.train.stop`). Those signals usually reach its data workers too: Ctrl-C goes to the terminal's
whole process group, ``torchrun`` signals each rank's process group, SLURM every process of the job step. A
worker that died of it would fail the step in flight, and the trainer could not reach its step boundary.

So the trainer names a *stop mark* in its environment (:data:`STOP_MARK_ENV`), which its workers inherit
(``fork`` and ``spawn``): a file to which the trainer's own signal handling appends one byte, the signal's
number, at the moment each signal arrives (``signal.set_wakeup_fd``: written by the C-level handler, before
any Python runs). A worker of such a trainer (:func:`follow_trainer_signals`, called in every DALI source
worker and PyTorch DataLoader worker):

- ignores SIGINT: neither DALI nor PyTorch stops a worker with it, and a worker ends with its trainer anyway
  (it watches its parent, see ``_parent_watch``);
- on SIGTERM, waits up to :data:`MARK_WAIT_S` for the trainer's mark of a SIGTERM it has not yet matched.
  Found: the trainer got the same signal and stops cleanly, closing its workers itself; the worker goes on
  (and exits :data:`IGNORED_EXIT_S` later in any case). Not found: the signal was for the worker alone (DALI's
  pool terminating its workers, a user's ``kill``), and it takes the signal's default action.

DALI's pool waits for a terminated worker with no timeout, so no SIGTERM is ignored for ever: a worker whose
trainer was signalled alone (``kill PID``) and then terminates it while closing exits :data:`IGNORED_EXIT_S`
after the ignored signal. Without the mark in the environment (a library user's loader) nothing changes.
"""
from __future__ import annotations

import os
import signal
import threading
import time

STOP_MARK_ENV = "VITDATA_STOP_MARK"
MARK_WAIT_S = 1.0        # how long a worker's SIGTERM waits for the trainer's mark of the same signal
IGNORED_EXIT_S = 20.0    # a worker that let a SIGTERM pass exits this long after it all the same
EXIT_CODE = 75           # the worker's status when it exits that way (EX_TEMPFAIL)

_matched = 0             # SIGTERMs of the trainer's mark this worker has let pass


def follow_trainer_signals() -> None:
    """In a worker whose environment names the trainer's stop mark, install the policy of the module
    docstring (from its main thread); otherwise do nothing."""
    if not os.environ.get(STOP_MARK_ENV) or threading.current_thread() is not threading.main_thread():
        return
    # Set every time, not once per process: PyTorch's worker loop sets its own SIGTERM handler in C after a
    # fork (which signal.getsignal does not see), before it calls the worker_init_fn that calls this.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)


def on_sigterm(signum=signal.SIGTERM, frame=None) -> None:
    """A worker's SIGTERM under a trainer that stops cleanly (see the module docstring)."""
    global _matched
    mark = os.environ.get(STOP_MARK_ENV)
    deadline = time.monotonic() + MARK_WAIT_S
    while mark:
        if trainer_sigterms(mark) > _matched:
            _matched += 1
            timer = threading.Timer(IGNORED_EXIT_S, os._exit, (EXIT_CODE,))
            timer.daemon = True
            timer.start()
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def trainer_sigterms(mark: str) -> int:
    """How many SIGTERMs the trainer's stop mark ``mark`` records (0 when it cannot be read)."""
    try:
        with open(mark, "rb") as f:
            return f.read().count(bytes([int(signal.SIGTERM)]))
    except OSError:
        return 0
