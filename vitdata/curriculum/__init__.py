"""The curriculum: (epoch, step) -> the knobs of that step's batch.

Owns :class:`~.schedule.Knobs` (image size, RandAugment magnitude and ops, Fourier crop size, PatchErasing
ratio, PSS keep ratio), the rules and :class:`~.schedule.Schedule` that map a step to them
(:mod:`.schedule`), and the seed papers' named schedules (:mod:`.named`: EfficientTrain, EfficientTrain++,
the 1-GPU/24-hour size curriculum, PSS, and the switches of ``vitdata train`` combined).

May import: ``vitdata.errors``. Holds no mutable global state and no learning-rate code (that lives
in :mod:`vitdata.train.lr`).
"""
from vitdata.curriculum.named import SCHEDULE_NAMES, curriculum_schedule, make_schedule
from vitdata.curriculum.schedule import Knobs, Schedule, combine

__all__ = ["Knobs", "Schedule", "combine", "SCHEDULE_NAMES", "curriculum_schedule", "make_schedule"]
