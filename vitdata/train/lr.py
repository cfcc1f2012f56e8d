"""The training loop's learning-rate schedules, in one module.

- :func:`lr_at`: linear warm-up, then a cosine to the floor at the run's end (every recipe but one);
- :class:`ComputeLR`: EfficientTrain++'s warm-up and cosine indexed by cumulative compute;
- :func:`build_lr`: the ``lr(epoch, i, n_steps, step)`` of a run's config.
"""
from __future__ import annotations

import math

from vitdata.curriculum.schedule import Schedule
from vitdata.errors import ConfigError


def build_lr(cfg, schedule, steps_per_epoch: int):
    """``lr(epoch, i, n_steps, step)`` of the run (``cfg`` a :class:`vitdata.train.config.TrainConfig`). EfficientTrain++ indexes its warm-up (the first 20 % of
    the compute) and cosine by cumulative compute (:class:`vitdata.train.lr.ComputeLR`); every other
    run warms up over ``--warmup-epochs`` and follows a cosine of its progress through the epochs: in a
    full epoch that is the global step (:func:`lr_at`); an epoch a pruning oracle shortened to ``n_steps``
    covers the same stretch of the cosine in fewer steps (InfoBatch rescales its schedule the same way),
    so the run still ends at the floor. ``cfg.cosine_span`` below 1 declares the cosine over
    ``(total - warmup) / span`` steps after the warm-up and cuts it at the run's end (the 1-GPU/24-hour
    paper's truncated cosine)."""
    if cfg.curriculum == "efficienttrain++":
        from vitdata.train.lr import ComputeLR
        return ComputeLR(schedule, cfg.lr, cfg.min_lr, warmup=0.2)
    total, warmup = cfg.epochs * steps_per_epoch, int(round(cfg.warmup_epochs * steps_per_epoch))
    span = getattr(cfg, "cosine_span", 1.0)
    declared = warmup + int(round((total - warmup) / span))

    def lr(epoch, i, n_steps, step):
        pos = step if n_steps == steps_per_epoch else int(round((epoch + i / n_steps) * steps_per_epoch))
        return lr_at(pos, declared, warmup, cfg.lr, cfg.min_lr)
    return lr


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine to ``floor`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * t))


class ComputeLR:
    """EfficientTrain++'s learning rate, indexed by cumulative compute instead of steps.

    The run's compute is the sum over steps of ``side**2`` (tokens per image, ``side`` = the step's
    low-pass size, else its image size, from ``schedule``'s first step of each epoch). At compute position
    ``u`` in [0, 1): linear warm-up to ``peak`` over the first ``warmup`` share of the compute (0.2: the
    official code warms up over 20 % of the budget, i.e. the two 96-px segments of DeiT-S), then cosine from
    ``peak`` to ``floor`` over the rest. The first full-size segment of the DeiT-S schedule starts at
    ``u = 0.8`` and gets 14.6 % of the peak; indexed by steps with a 1-epoch warm-up it got 1.8 %.
    ``lr(epoch, i, n_steps)``: step ``i`` of ``n_steps`` in ``epoch`` (an epoch shortened by a pruning plan
    spreads its compute over the steps it runs).
    """

    def __init__(self, schedule: Schedule, peak: float, floor: float = 0.0, warmup: float = 0.2):
        if not 0.0 <= warmup < 1.0:
            raise ConfigError(f"compute warm-up share must be in [0, 1), got {warmup}", ("warmup",))
        cost = []
        for epoch in range(schedule.epochs):
            k = schedule(epoch, 0)
            cost.append(float((k.lowpass_size or k.image_size) ** 2))
        self.cost, self.total = cost, sum(cost)
        self.start = [sum(cost[:e]) for e in range(len(cost))]
        self.peak, self.floor, self.warmup = float(peak), float(floor), float(warmup)

    def position(self, epoch: int, i: int, n_steps: int) -> float:
        """Share of the run's compute spent before step ``i`` of ``epoch``."""
        epoch = min(epoch, len(self.cost) - 1)
        return (self.start[epoch] + self.cost[epoch] * i / max(1, n_steps)) / self.total

    def __call__(self, epoch: int, i: int, n_steps: int, step: int | None = None) -> float:
        u = self.position(epoch, i, n_steps)
        if u < self.warmup:
            done = u + self.cost[min(epoch, len(self.cost) - 1)] / max(1, n_steps) / self.total  # after this step
            return self.peak * min(1.0, done / self.warmup)
        t = min(1.0, (u - self.warmup) / (1.0 - self.warmup))
        return self.floor + 0.5 * (self.peak - self.floor) * (1.0 + math.cos(math.pi * t))
