"""The epoch a loader runs: one :class:`EpochRun` holds where the loader stands (epoch, position, stage) and
what that epoch's iteration carries between batches, so the loader itself keeps configuration only.

The loader makes a new run for each epoch it moves to (``set_epoch`` with another epoch, the iteration
after a finished one, ``load_state_dict``); nothing of a run outlives its epoch.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Iterator


class Stage(enum.Enum):
    READY = "ready"          # the epoch is chosen; its next iteration starts the backend at `position`
    RUNNING = "running"      # the backend runs the epoch; `position` steps of it were handed over
    FINISHED = "finished"    # every step of the epoch was handed over


@dataclass(eq=False)
class EpochRun:
    """One epoch's running state on this rank.

    ``epoch``, ``position`` (steps handed over) and ``stage``: where the loader stands, the one place that
    says it. ``planned``: the oracle's plan of ``epoch`` is on the sampler. ``loaded``: a state given to
    ``load_state_dict`` that nothing has moved on from yet (``state_dict`` returns it as it came).
    ``knobs``: the schedule's Knobs of each step, set when the backend starts (their count is the
    epoch's steps on this rank). ``pending``: under ``on_error="raise"``, the consumed step's DataErrors
    still to raise, then its batch (None when it has no good sample).
    """
    epoch: int = 0
    position: int = 0
    stage: Stage = Stage.READY
    planned: bool = False
    loaded: dict | None = field(default=None, repr=False)
    knobs: list = field(default_factory=list, repr=False)
    pending: list = field(default_factory=list, repr=False)

    @property
    def steps(self) -> int:
        """Steps of the epoch on this rank (known once the backend has started)."""
        return len(self.knobs)

    def started(self, knobs: list) -> None:
        """The backend runs the epoch from ``position`` on; ``knobs`` are every step's."""
        self.knobs, self.stage, self.loaded = knobs, Stage.RUNNING, None

    def handed_over(self, step: int) -> None:
        """Step ``step`` left the backend: it is consumed, also when it holds bad samples (iterating again
        continues with that step's remaining errors and good samples, in step with the backend's queue)."""
        self.position = step + 1
        self.stage = Stage.FINISHED if self.position == self.steps else Stage.RUNNING

    def drain(self) -> Iterator[Any]:
        """Hand over ``pending``: each DataError is raised (ending this iteration), the batch yielded."""
        while self.pending:
            item = self.pending.pop(0)
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                yield item
