"""Where a loader stands in its epochs: one :class:`ResumePoint` (epoch, position, stage) that iteration,
``set_epoch`` and the state move between."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Stage(enum.Enum):
    READY = "ready"          # the epoch is chosen; its next iteration starts the backend at `position`
    RUNNING = "running"      # the backend runs the epoch; `position` steps of it were handed over
    FINISHED = "finished"    # every step of the epoch was handed over


@dataclass(frozen=True)
class ResumePoint:
    """Where the loader stands: the one value that iteration, ``set_epoch`` and state move between.

    ``planned``: the oracle's plan of ``epoch`` is on the sampler. ``loaded``: a state given to
    ``load_state_dict`` that nothing has moved on from yet (``state_dict`` returns it as it came)."""
    epoch: int = 0
    position: int = 0
    stage: Stage = Stage.READY
    planned: bool = False
    loaded: dict | None = field(default=None, compare=False, repr=False)
