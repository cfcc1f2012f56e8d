"""Oracle policies: how the folded per-sample table becomes the next epoch's plan.

A :class:`Policy` receives an :class:`OracleTable` (a host snapshot of the table) on every rank with the
same inputs and returns a :class:`vitdata.data.sampler.EpochPlan`: sampling weights or a kept set,
per-sample RandAugment boost and PatchErasing ratio, per-sample loss weights. ``register_policy`` makes a
subclass selectable by name in ``DifficultyOracle(policy=...)``. The table's columns and the operational
definitions of difficulty are documented in :mod:`vitdata.oracle`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vitdata.errors import ConfigError
from vitdata.data.sampler import EpochPlan

__all__ = ["OracleTable", "Policy", "UniformPolicy", "DataCentricPolicy", "PruneEasyPolicy", "WeightedPolicy",
           "POLICIES", "register_policy", "boosted_erase_ratio", "MAX_ERASE_RATIO"]


MAX_ERASE_RATIO = 0.9   # a boosted PatchErasing ratio never blanks the whole image


def boosted_erase_ratio(schedule_ratio: float, boost: np.ndarray | None, ids: np.ndarray) -> np.ndarray:
    """(B,) float32 PatchErasing ratio of the samples ``ids``: the schedule's ratio plus the plan's
    per-sample boost (``boost[ids]``; None = no plan), clipped to ``MAX_ERASE_RATIO`` (docs/methods.md §1:
    taking the larger of the two left a 0.3 boost on a 0.3 recipe ratio without effect)."""
    erase = np.full(len(ids), schedule_ratio, np.float32)
    if boost is not None:
        erase = np.minimum(erase + boost[ids], np.float32(max(MAX_ERASE_RATIO, schedule_ratio)))
    return erase.astype(np.float32)


@dataclasses.dataclass
class OracleTable:
    """Host (NumPy) snapshot of the per-sample table handed to a policy; arrays have length ``N``.

    ``p_y`` and ``ema_difficulty`` are widened to float32; ``last_correct`` is bool. ``epoch`` is the
    epoch that was just folded.
    """
    last_loss: np.ndarray
    ema_loss: np.ndarray
    p_y: np.ndarray
    ema_difficulty: np.ndarray
    seen: np.ndarray
    forgetting: np.ndarray
    last_epoch: np.ndarray
    last_correct: np.ndarray
    epoch: int
    alpha: float
    beta: float
    skipped: np.ndarray | None = None   # bool: skip-flagged (skipped, not reported since; module doc)

    def __len__(self) -> int:
        return len(self.seen)


# --------------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------------

class Policy:
    """Turns the folded table into the next epoch's plan. Subclasses set ``name`` and override ``plan``.

    ``plan(table, epoch, metrics, rng)`` is called on every rank with the same inputs (``epoch`` is the
    epoch the plan is for; ``metrics`` is the dict of the epoch just finished; ``rng`` is a NumPy
    generator seeded from (oracle seed, epoch)), so it must be a pure function of them and of its own
    state. State that must survive a resume goes in ``state_dict`` as JSON-able scalars.
    """
    name = "base"

    def plan(self, table: OracleTable, epoch: int, metrics: dict, rng: np.random.Generator):
        raise NotImplementedError

    def config(self) -> dict:
        return {}

    def mix_prob(self) -> float | None:
        """Share of the batches that Mixup/CutMix mixes in the epoch just planned (timm ``Mixup.mix_prob``),
        or None to leave the trainer's own setting. A pure function of the policy's state."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


POLICIES: dict[str, type[Policy]] = {}


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make ``cls`` selectable as ``DifficultyOracle(policy=cls.name)``."""
    POLICIES[cls.name] = cls
    return cls


@register_policy
class UniformPolicy(Policy):
    """Baseline: an empty plan (uniform order, schedule-only augmentation, unit loss weights)."""
    name = "uniform"

    def plan(self, table, epoch, metrics, rng):
        return EpochPlan()


@register_policy
class DataCentricPolicy(Policy):
    """Harder views for easy samples only, once training has left the formation period.

    A sample is easy when its latest ``p_y >= alpha``. In growth and exploration an integral controller
    moves a strength ``s`` in [0, 1]: ``s += gain * (DDP_e - target_easy)`` each epoch, so the measured
    ``DDP_e`` is pushed toward ``target_easy``. Easy samples get ``aug_magnitude = s * max_magnitude``
    (added to the schedule's RandAugment magnitude, timm 0..10 scale) and ``erase_ratio = s * max_erase``
    (PatchErasing, also added to the schedule's ratio: :func:`boosted_erase_ratio`); moderate, hard and
    unseen samples get 0. Both are boosts on top of the schedule, so they act even when the recipe erases
    every sample (the data-centric recipe's 0.3, the "PatchErasing + AutoErasing" sweep's starting ratio).
    In formation ``s`` stays 0 and the plan is empty.

    The Mixup/CutMix lever (``mix_lever=True``, off by default): the share of batches that Mixup/CutMix
    mixes follows the same strength, ``mix_prob = s``: no mixing in formation, more mixing as easy samples
    dominate, so harder (mixed) samples are made late in training. The paper has no code; docs/methods.md §1
    marks this reading of its "difficulty controlled based on MixUp" as UNCONFIRMED. It needs the trainer
    to mix (``vitdata train --mixup/--cutmix ... --oracle-mixing``).
    """
    name = "data-centric"

    def __init__(self, *, target_easy: float = 0.5, gain: float = 0.5, max_magnitude: float = 5.0,
                 max_erase: float = 0.3, mix_lever: bool = False):
        if not 0.0 <= target_easy <= 1.0:
            raise ConfigError(f"target_easy must be in [0, 1], got {target_easy}", ("target_easy",))
        if gain <= 0:
            raise ConfigError(f"gain must be > 0, got {gain}", ("gain",))
        if max_magnitude < 0 or not 0.0 <= max_erase < 1.0:
            raise ConfigError(f"need max_magnitude >= 0 and 0 <= max_erase < 1, got {max_magnitude}, {max_erase}",
                              ("max_magnitude", "max_erase"))
        self.target_easy, self.gain, self.max_magnitude, self.max_erase = target_easy, gain, max_magnitude, max_erase
        self.mix_lever = bool(mix_lever)
        self.strength = 0.0

    def config(self):
        return {"target_easy": self.target_easy, "gain": self.gain, "max_magnitude": self.max_magnitude,
                "max_erase": self.max_erase, "mix_lever": self.mix_lever}

    def mix_prob(self):
        return self.strength if self.mix_lever else None

    def plan(self, table, epoch, metrics, rng):
        if metrics["period"] == "formation":
            self.strength = 0.0
        else:
            self.strength = float(min(1.0, max(0.0, self.strength + self.gain * (metrics["ddp_e"] - self.target_easy))))
        metrics["strength"] = self.strength
        if self.mix_lever:
            metrics["mix_prob"] = self.strength
        if self.strength == 0.0:
            return EpochPlan()
        easy = (table.p_y >= table.alpha) & (table.seen > 0)
        s = np.float32(self.strength)
        mag = np.where(easy, s * np.float32(self.max_magnitude), np.float32(0)).astype(np.float32)
        erase = np.where(easy, s * np.float32(self.max_erase), np.float32(0)).astype(np.float32)
        return EpochPlan(aug_magnitude=mag, erase_ratio=erase)

    def state_dict(self):
        return {"strength": self.strength}

    def load_state_dict(self, state):
        self.strength = float(state["strength"])


@register_policy
class PruneEasyPolicy(Policy):
    """InfoBatch-style pruning of well-learned samples, with unbiased loss rescaling and annealing.

    Well-learned: seen, and ``last_loss < mean(last_loss of seen samples)`` (``criterion="loss"``) or
    ``p_y >= alpha`` (``criterion="p_y"``). Each is pruned independently with probability ``ratio``; the
    kept well-learned ones get ``loss_weight = 1 / (1 - ratio)``, everything else 1, so for every sample
    E[kept * weight] = 1 and the expected epoch gradient equals the full-data one. When ``epochs`` is
    given, epoch ``e`` (0-based) is pruned only while ``e + 1 <= (1 - anneal) * epochs``, as InfoBatch's
    released sampler does (its ``stop_prune = num_epochs * delta``, delta 0.875, compared with an iteration
    counter that is already ``e + 1`` when epoch ``e`` is drawn); later epochs read the full data with
    weight 1. So 8 epochs prune 0-6 and read everything in 7; 6 epochs prune 0-4 and read everything in 5.
    """
    name = "prune-easy"

    def __init__(self, *, ratio: float = 0.5, anneal: float = 0.125, epochs: int | None = None,
                 criterion: str = "loss"):
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"ratio must be in [0, 1), got {ratio}", ("ratio",))
        if not 0.0 <= anneal <= 1.0:
            raise ConfigError(f"anneal must be in [0, 1], got {anneal}", ("anneal",))
        if criterion not in ("loss", "p_y"):
            raise ConfigError(f"criterion must be 'loss' or 'p_y', got {criterion!r}", ("criterion",))
        if epochs is not None and epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}", ("epochs",))
        self.ratio, self.anneal, self.epochs, self.criterion = ratio, anneal, epochs, criterion

    def config(self):
        return {"ratio": self.ratio, "anneal": self.anneal, "epochs": self.epochs, "criterion": self.criterion}

    def annealed(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) reads the full data: past InfoBatch's ``(1 - anneal) * epochs``."""
        return self.epochs is not None and epoch + 1 > self.epochs * (1.0 - self.anneal)

    def well_learned(self, table: OracleTable) -> np.ndarray:
        seen = table.seen > 0
        if self.criterion == "p_y":
            return seen & (table.p_y >= table.alpha)
        if not seen.any():
            return seen
        mean = table.last_loss[seen].astype(np.float64).mean()
        return seen & (table.last_loss < mean)

    def plan(self, table, epoch, metrics, rng):
        if self.annealed(epoch):
            metrics["pruned"] = 0
            return EpochPlan()
        well = self.well_learned(table)
        pruned = well & (rng.random(len(table)) < self.ratio)
        weight = np.where(well & ~pruned, np.float32(1.0 / (1.0 - self.ratio)), np.float32(1.0)).astype(np.float32)
        metrics["pruned"] = int(pruned.sum())
        return EpochPlan(kept=~pruned, loss_weight=weight)


@register_policy
class WeightedPolicy(Policy):
    """Sampling probability rising with difficulty, with a floor.

    ``prob_i = floor / N + (1 - floor) * d_i**gamma / sum_j d_j**gamma`` where ``d`` is the EMA
    difficulty (unseen samples count as 1, the hardest; skip-flagged ones, bad files the loader could not
    read, as 0: they get the floor weight), so ``prob_i >= floor / N`` for every sample.
    ``cap`` bounds ``prob_i <= cap / N`` (the excess is spread over the other samples in proportion,
    which only raises them): late in training a few hard samples would otherwise be drawn hundreds of
    times per epoch. ``cap=None`` disables it.

    Coverage guarantee with vitdata's sampler (``D = num_draws`` draws by systematic resampling, one
    uniform offset per epoch): sample i is drawn ``floor(D*prob_i)`` or ``ceil(D*prob_i)`` times, and
    at least once with probability ``>= min(1, D*prob_i) >= floor * D / N``. With ``D = N`` it is
    missed in one epoch with probability ``<= 1 - floor`` whatever happened before, so in ``K``
    consecutive epochs with probability ``<= (1 - floor)**K``; all N samples are read within
    ``K >= ln(N / delta) / -ln(1 - floor)`` epochs with probability ``>= 1 - delta`` (union bound;
    floor 0.5, N = 1.28 M, delta = 1e-3: K = 31). ``floor = 1`` reads every sample exactly once per
    epoch. With ``drop_last`` the ``D mod global_batch`` draws at the end of the shuffled order are not
    read, which lowers these bounds by at most that share.
    """
    name = "weighted"

    def __init__(self, *, gamma: float = 1.0, floor: float = 0.5, cap: float | None = 10.0,
                 num_draws: int | None = None):
        if not 0.0 < floor <= 1.0:
            raise ConfigError(f"floor must be in (0, 1], got {floor}", ("floor",))
        if gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {gamma}", ("gamma",))
        if cap is not None and cap < 1.0:
            raise ConfigError(f"cap must be >= 1 (times the uniform probability) or None, got {cap}", ("cap",))
        self.gamma, self.floor, self.cap, self.num_draws = gamma, floor, cap, num_draws

    def config(self):
        return {"gamma": self.gamma, "floor": self.floor, "cap": self.cap, "num_draws": self.num_draws}

    @staticmethod
    def _apply_cap(w: np.ndarray, limit: float) -> np.ndarray:
        """Probabilities ``w`` (sum 1) with every entry <= ``limit``: capped entries are set to the
        limit and the others rescaled to fill the rest, repeated until none exceeds it."""
        capped = np.zeros(len(w), dtype=bool)
        for _ in range(64):
            over = ~capped & (w > limit)
            if not over.any():
                break
            capped |= over
            free = ~capped
            w = np.where(capped, limit, w * ((1.0 - limit * capped.sum()) / w[free].sum()))
        return w

    def plan(self, table, epoch, metrics, rng):
        n = len(table)
        d = np.where(table.seen > 0, table.ema_difficulty.astype(np.float64), 1.0)
        if table.skipped is not None:
            d[table.skipped] = 0.0     # a bad file: the floor weight, not the never-seen prior
        np.clip(d, 0.0, 1.0, out=d)
        if self.gamma != 1.0:
            np.power(d, self.gamma, out=d)
        total = d.sum()
        w = np.full(n, 1.0 / n) if total <= 0 else d * ((1.0 - self.floor) / total) + self.floor / n
        if self.cap is not None:
            w = self._apply_cap(w, self.cap / n)
        metrics["max_weight_ratio"] = float(w.max() * n)
        return EpochPlan(weights=w, num_draws=self.num_draws)


def plan_summary(plan) -> dict:
    """Small JSON-able description of a plan for the metrics log."""
    if plan is None:
        return {}
    out = {}
    if plan.kept is not None:
        out["kept_fraction"] = float(np.mean(plan.kept))
    if plan.weights is not None:
        w = plan.weights / plan.weights.sum()
        out["weight_max_over_uniform"] = float(w.max() * len(w))
        out["weight_min_over_uniform"] = float(w.min() * len(w))
    if plan.aug_magnitude is not None:
        out["aug_magnitude_max"] = float(plan.aug_magnitude.max())
        out["boosted_fraction"] = float(np.mean(plan.aug_magnitude > 0))
    if plan.erase_ratio is not None:
        out["erase_ratio_max"] = float(plan.erase_ratio.max())
    if plan.loss_weight is not None:
        out["loss_weight_max"] = float(plan.loss_weight.max())
    return out
