"""Curriculum schedules: (epoch, step) -> :class:`Knobs` for that step's batch.

A :class:`Schedule` holds one *rule* per knob and is a pure function of (epoch, step); it has no
mutable state, and :meth:`Schedule.to_dict` / :meth:`Schedule.from_dict` round-trip it through JSON
(the loader puts it in its state fingerprint). Knobs are per step: every batch of a step, on every rank,
gets the same image size, so a step has one shape.

Rules (all JSON-serialisable dataclasses):

- :class:`Constant` ``(value)``.
- :class:`EpochTable` ``(starts, values)``: piecewise constant by epoch; ``values[i]`` from epoch
  ``starts[i]`` (``starts[0] == 0``) until the next start.
- :class:`Ramp` ``(start, end, t0, t1, shape, per)``: ``start`` until time ``t0``, ``end`` from ``t1`` on,
  linear or cosine in between. Time is the epoch (``per="epoch"``) or the fractional epoch
  ``epoch + step / steps_per_epoch`` (``per="step"``).
- :class:`PSS` ``(kind, start, end, cooldown)``: the patch-sampling schedule's keep ratio
  (:func:`pss_keep_ratio`), per iteration.

Named schedules come from :func:`vitdata.curriculum.named.make_schedule`
(``constant``, ``efficienttrain``, ``efficienttrain++``, ``linear``, ``progressive-size``); :func:`combine`
stacks them, e.g. EfficientTrain's magnitudes with the
1-GPU/24 h size curriculum and PSS::

    base = make_schedule("efficienttrain", epochs=300, steps_per_epoch=1251)
    size = make_schedule("progressive-size", epochs=300, steps_per_epoch=1251, epoch_step=5)
    sched = combine(base, image_size=size, keep_ratio=PSS("cyclic", cooldown=10))

Post-processing of every evaluation (so stacked rules stay consistent):

- ``image_size`` and ``lowpass_size`` become ints. With ``patch_size`` set they are rounded to the
  nearest multiple of it (halves up, at least one patch) when ``round_sizes=True``, and a size that is not
  a multiple raises ConfigError (naming ``image_size``/``lowpass_size`` and ``patch_size``) when
  ``round_sizes=False``.
- ``lowpass_size >= image_size`` means no low-pass crop: it becomes None. ``lowpass_filter`` says how the
  batch goes from ``image_size`` to ``lowpass_size``: ``"fourier"`` (EfficientTrain's crop of the spectrum)
  or ``"lanczos"`` (EfficientTrain++'s Lanczos resize); anything else raises ConfigError.
- ``erase_ratio`` must lie in [0, 1], ``keep_ratio`` in (0, 1], ``randaug_magnitude`` >= 0; otherwise
  ConfigError. The construction evaluates every epoch's first and last step once, so a bad table fails
  when the schedule is built, not mid-run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from typing import Any, ClassVar

import numpy as np

from vitdata.errors import ConfigError, StateError, check_format, check_int

__all__ = ["Knobs", "KNOBS", "Schedule", "Rule", "Constant", "EpochTable", "Ramp", "PSS", "combine",
           "pss_drop_ratio", "pss_keep_ratio", "pss_num_tokens", "SCHEDULE_FORMAT"]

SCHEDULE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Knobs:
    """Curriculum knobs of one step.

    image_size: output side in pixels (square). randaug_magnitude: timm scale 0..10 (per-sample oracle
    offsets are added by the loader). randaug_num_ops: ops per image. lowpass_size: side the batch is
    brought down to after cropping and augmenting at ``image_size`` (EfficientTrain's ``B``), or None for
    off. lowpass_filter: how: ``"fourier"`` (EfficientTrain's low-frequency crop) or ``"lanczos"``
    (EfficientTrain++'s Lanczos resize). erase_ratio: PatchErasing fraction of patches, 0 = off.
    keep_ratio: PSS fraction of patch tokens kept, 1.0 = all.
    """

    image_size: int
    randaug_magnitude: float = 9.0
    randaug_num_ops: int = 2
    lowpass_size: int | None = None
    erase_ratio: float = 0.0
    keep_ratio: float = 1.0
    lowpass_filter: str = "fourier"


LOWPASS_FILTERS = ("fourier", "lanczos")
KNOBS = tuple(f.name for f in dataclasses.fields(Knobs))
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Knobs) if f.default is not dataclasses.MISSING}
_DEFAULTS["image_size"] = 224


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _num(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{field} must be a finite number, got {value!r}", (field,))
    return float(value) if not isinstance(value, numbers.Integral) else int(value)


# --------------------------------------------------------------------------------------------------
# PSS (patch sampling schedule)
# --------------------------------------------------------------------------------------------------

PSS_KINDS = ("cyclic", "linear", "cosine")


def _default_cooldown(epochs: int) -> int:
    # The PSS DeiT configs use 10 full-token epochs out of 300; scale that share to the run.
    return _round_half_up(10 * epochs / 300)


def pss_drop_ratio(kind: str, epoch: int, step: int, epochs: int, steps_per_epoch: int, start: float = 0.8,
                   end: float = -0.1, cooldown: int | None = None) -> float:
    """PSS drop ratio r for iteration ``step`` of ``epoch``, in {0, 0.2, 0.4, 0.6, 0.8, 1.0}.

    - ``cyclic``: a triangle wave inside each epoch, with t = (step mod steps_per_epoch) / steps_per_epoch:
      r = end + (start - end) * |1 - 2t| (``start`` at the first iteration, ``end`` at mid-epoch, back
      towards ``start`` at the epoch's end).
    - ``linear``: r = start + (end - start) * p, p = (epoch * steps_per_epoch + step) / ((epochs -
      cooldown) * steps_per_epoch), p clamped to [0, 1].
    - ``cosine``: r = end + (start - end) * (1 + cos(pi p)) / 2, same p.

    Then r is clamped to [0, 1] and rounded to the nearest 0.2 (ties to even, Python's ``round`` as in
    the PSS code: r = 0.5 gives 0.4). From epoch ``epochs -
    cooldown`` on r = 0 (full tokens). ``cooldown`` defaults to round(10 * epochs / 300), i.e. 10 epochs
    of a 300-epoch run as in the PSS DeiT configs. Evaluation uses r = 0 (not this function).
    """
    if kind not in PSS_KINDS:
        raise ConfigError(f"PSS kind must be one of {PSS_KINDS}, got {kind!r}", ("pss",))
    epochs = check_int(epochs, "epochs", 1)
    spe = check_int(steps_per_epoch, "steps_per_epoch", 1)
    cooldown = _default_cooldown(epochs) if cooldown is None else check_int(cooldown, "pss_cooldown", 0)
    if cooldown > epochs:
        raise ConfigError(f"PSS cooldown {cooldown} exceeds epochs {epochs}", ("pss_cooldown", "epochs"))
    if epoch >= epochs - cooldown:
        return 0.0
    if kind == "cyclic":
        t = (step % spe) / spe
        r = end + (start - end) * abs(1.0 - 2.0 * t)
    else:
        p = min(max((epoch * spe + step) / ((epochs - cooldown) * spe), 0.0), 1.0)
        if kind == "linear":
            r = start + (end - start) * p
        else:
            r = end + (start - end) * (1.0 + math.cos(math.pi * p)) / 2.0
    k = round(min(max(r, 0.0), 1.0) * 5.0)  # Python's round: ties to even, as the PSS code
    return k / 5.0


def pss_keep_ratio(kind: str, epoch: int, step: int, epochs: int, steps_per_epoch: int, start: float = 0.8,
                   end: float = -0.1, cooldown: int | None = None) -> float:
    """1 - :func:`pss_drop_ratio`: the fraction of tokens kept, in {1.0, 0.8, 0.6, 0.4, 0.2, 0.0}.

    Computed as (5 - k) / 5 so the five values are exact decimals' nearest floats.
    """
    r = pss_drop_ratio(kind, epoch, step, epochs, steps_per_epoch, start, end, cooldown)
    return (5 - round(r * 5)) / 5.0


def pss_num_tokens(keep_ratio: float, num_tokens: int = 197) -> int:
    """Tokens kept, CLS included: round(keep_ratio * num_tokens) (ties to even, as the PSS code's
    ``round``), at least 1 (the CLS token).

    For ViT-S/16 at 224 (197 tokens): 1.0 -> 197, 0.8 -> 158, 0.6 -> 118, 0.4 -> 79, 0.2 -> 39.
    """
    return max(1, round(keep_ratio * num_tokens))


# --------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------

class Rule:
    """A knob's value as a function of (epoch, step) given the run's length. Subclasses are frozen dataclasses."""

    type: ClassVar[str]
    per_step: ClassVar[bool] = False  # whether the value can change inside an epoch
    _registry: ClassVar[dict[str, type["Rule"]]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Rule._registry[cls.type] = cls

    def __call__(self, epoch: int, step: int, epochs: int, steps_per_epoch: int) -> Any:
        raise NotImplementedError

    def varies_within_epoch(self) -> bool:
        return self.per_step

    def to_dict(self) -> dict:
        d = {"type": self.type}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @staticmethod
    def from_dict(d: dict) -> "Rule":
        if not isinstance(d, dict) or d.get("type") not in Rule._registry:
            raise StateError(f"unknown schedule rule {d!r}")
        cls = Rule._registry[d["type"]]
        names = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - names - {"type"}
        if extra:
            raise StateError(f"schedule rule {d['type']!r} has unknown fields {sorted(extra)}")
        return cls(**{k: v for k, v in d.items() if k != "type"})


@dataclasses.dataclass(frozen=True)
class Constant(Rule):
    value: Any
    type: ClassVar[str] = "constant"

    def __call__(self, epoch, step, epochs, steps_per_epoch):
        return self.value


@dataclasses.dataclass(frozen=True)
class EpochTable(Rule):
    """``values[i]`` for epochs in ``[starts[i], starts[i+1])``; ``starts`` strictly increasing from 0."""

    starts: tuple
    values: tuple
    type: ClassVar[str] = "epoch_table"

    def __post_init__(self):
        object.__setattr__(self, "starts", tuple(int(s) for s in self.starts))
        object.__setattr__(self, "values", tuple(self.values))
        s = self.starts
        if not s or s[0] != 0 or any(b <= a for a, b in zip(s, s[1:])) or len(s) != len(self.values):
            raise ConfigError(f"epoch table needs strictly increasing starts from 0 and one value per start, "
                              f"got starts={list(s)} values={list(self.values)}", ("schedule",))

    def __call__(self, epoch, step, epochs, steps_per_epoch):
        i = len(self.starts) - 1
        while self.starts[i] > epoch:
            i -= 1
        return self.values[i]


@dataclasses.dataclass(frozen=True)
class Ramp(Rule):
    """``start`` up to time ``t0``, ``end`` from ``t1`` on, ``shape`` ("linear" | "cosine") in between.

    Time is ``epoch`` (``per="epoch"``) or ``epoch + step / steps_per_epoch`` (``per="step"``).
    """

    start: float
    end: float
    t0: float
    t1: float
    shape: str = "linear"
    per: str = "epoch"
    type: ClassVar[str] = "ramp"

    def __post_init__(self):
        if self.shape not in ("linear", "cosine") or self.per not in ("epoch", "step"):
            raise ConfigError(f"ramp shape must be linear|cosine and per epoch|step, got {self.shape!r}, "
                              f"{self.per!r}", ("schedule",))
        if not self.t1 >= self.t0:
            raise ConfigError(f"ramp must end (t1={self.t1}) at or after it starts (t0={self.t0})", ("schedule",))

    def varies_within_epoch(self) -> bool:
        return self.per == "step"

    def __call__(self, epoch, step, epochs, steps_per_epoch):
        t = epoch + (step / steps_per_epoch if self.per == "step" else 0.0)
        if self.t1 == self.t0:
            p = 1.0 if t >= self.t1 else 0.0
        else:
            p = min(max((t - self.t0) / (self.t1 - self.t0), 0.0), 1.0)
        if self.shape == "cosine":
            p = (1.0 - math.cos(math.pi * p)) / 2.0
        return self.start + (self.end - self.start) * p


@dataclasses.dataclass(frozen=True)
class PSS(Rule):
    """Keep ratio of the patch sampling schedule (:func:`pss_keep_ratio`); ``cooldown`` None = default."""

    kind: str = "cyclic"
    start: float = 0.8
    end: float = -0.1
    cooldown: int | None = None
    type: ClassVar[str] = "pss"
    per_step: ClassVar[bool] = True

    def __post_init__(self):
        if self.kind not in PSS_KINDS:
            raise ConfigError(f"PSS kind must be one of {PSS_KINDS}, got {self.kind!r}", ("pss",))

    def __call__(self, epoch, step, epochs, steps_per_epoch):
        return pss_keep_ratio(self.kind, epoch, step, epochs, steps_per_epoch, self.start, self.end, self.cooldown)


def _as_rule(value: Any, knob: str) -> Rule:
    if isinstance(value, Rule):
        return value
    if isinstance(value, Schedule):
        return value.rules[knob]
    return Constant(value)


# --------------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------------

class Schedule:
    """Per-knob rules bound to a run length; ``sched(epoch, step) -> Knobs``.

    Args:
        epochs, steps_per_epoch: the run's length (PSS and step ramps use them).
        image_size, randaug_magnitude, randaug_num_ops, lowpass_size, erase_ratio, keep_ratio,
            lowpass_filter: a Rule,
            or a plain value (a Constant). Missing knobs take :class:`Knobs`' defaults (image_size 224).
        patch_size: when set, image and low-pass sizes are multiples of it (see ``round_sizes``).
        round_sizes: round sizes to the nearest multiple of ``patch_size`` (True) or refuse other sizes.
        name: informative label, kept in :meth:`to_dict`.
    """

    def __init__(self, *, epochs: int, steps_per_epoch: int, patch_size: int | None = None,
                 round_sizes: bool = True, name: str | None = None, **knobs: Any):
        unknown = set(knobs) - set(KNOBS)
        if unknown:
            raise ConfigError(f"unknown schedule knobs {sorted(unknown)}; known: {list(KNOBS)}", tuple(sorted(unknown)))
        self.epochs = check_int(epochs, "epochs", 1)
        self.steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", 1)
        self.patch_size = None if patch_size is None else check_int(patch_size, "patch_size", 1)
        self.round_sizes = bool(round_sizes)
        self.name = name
        self.rules: dict[str, Rule] = {k: _as_rule(knobs.get(k, _DEFAULTS[k]), k) for k in KNOBS}
        self._check()

    # -- evaluation ---------------------------------------------------------------------------------
    def _size(self, value: Any, field: str) -> int:
        v = _num(value, field)
        if self.patch_size is None:
            size = _round_half_up(v)
        elif self.round_sizes:
            size = max(self.patch_size, self.patch_size * _round_half_up(v / self.patch_size))
        else:
            size = _round_half_up(v)
            if size != v or size % self.patch_size:
                raise ConfigError(f"{field} {value} is not a multiple of patch_size {self.patch_size} "
                                  f"(pass round_sizes=True to round it)", (field, "patch_size"))
        if size < 1:
            raise ConfigError(f"{field} must be >= 1, got {value}", (field,))
        return size

    def __call__(self, epoch: int, step: int = 0, *, steps_in_epoch: int | None = None) -> Knobs:
        """Knobs for global step ``step`` of ``epoch`` (0-based).

        ``steps_in_epoch`` overrides the bound steps_per_epoch for this epoch (an epoch shortened by a
        pruning plan), so per-iteration rules such as cyclic PSS span the epoch actually run.
        """
        spe = self.steps_per_epoch if steps_in_epoch is None else check_int(steps_in_epoch, "steps_in_epoch", 1)
        r = {k: rule(epoch, step, self.epochs, spe) for k, rule in self.rules.items()}
        image_size = self._size(r["image_size"], "image_size")
        lowpass = r["lowpass_size"]
        if lowpass is not None:
            lowpass = self._size(lowpass, "lowpass_size")
            if lowpass >= image_size:
                lowpass = None
        lowpass_filter = r["lowpass_filter"]
        if lowpass_filter not in LOWPASS_FILTERS:
            raise ConfigError(f"lowpass_filter must be one of {list(LOWPASS_FILTERS)}, got {lowpass_filter!r}",
                              ("lowpass_filter",))
        magnitude = float(_num(r["randaug_magnitude"], "randaug_magnitude"))
        if magnitude < 0:
            raise ConfigError(f"randaug_magnitude must be >= 0, got {magnitude}", ("randaug_magnitude",))
        num_ops = _round_half_up(_num(r["randaug_num_ops"], "randaug_num_ops"))
        if num_ops < 0:
            raise ConfigError(f"randaug_num_ops must be >= 0, got {num_ops}", ("randaug_num_ops",))
        erase = float(_num(r["erase_ratio"], "erase_ratio"))
        if not 0.0 <= erase <= 1.0:
            raise ConfigError(f"erase_ratio must lie in [0, 1], got {erase}", ("erase_ratio",))
        keep = float(_num(r["keep_ratio"], "keep_ratio"))
        if not 0.0 < keep <= 1.0:
            raise ConfigError(f"keep_ratio must lie in (0, 1], got {keep}", ("keep_ratio",))
        return Knobs(image_size=image_size, randaug_magnitude=magnitude, randaug_num_ops=num_ops,
                     lowpass_size=lowpass, erase_ratio=erase, keep_ratio=keep, lowpass_filter=lowpass_filter)

    def for_eval(self, epoch: int) -> Knobs:
        """Evaluation knobs at ``epoch``: the schedule's image and low-pass size, no RandAugment, no
        erasing, all tokens (PSS evaluates with r = 0)."""
        k = self(epoch, 0)
        return dataclasses.replace(k, randaug_magnitude=0.0, randaug_num_ops=0, erase_ratio=0.0, keep_ratio=1.0)

    def _check(self) -> None:
        last = self.steps_per_epoch - 1
        within = any(rule.varies_within_epoch() for rule in self.rules.values())
        for epoch in range(self.epochs):
            self(epoch, 0)
            if within and last:
                self(epoch, last)

    def epoch_table(self) -> list[tuple[int, Knobs]]:
        """(epoch, knobs at its first step) for every epoch where the first-step knobs change."""
        rows, prev = [], None
        for epoch in range(self.epochs):
            k = self(epoch, 0)
            if k != prev:
                rows.append((epoch, k))
            prev = k
        return rows

    def image_sizes(self) -> list[int]:
        """The distinct image sizes of the run, ascending (e.g. to pre-build shapes or compile graphs)."""
        sizes = {k.image_size for _, k in self.epoch_table()}
        if self.rules["image_size"].varies_within_epoch():
            sizes |= {self(e, s).image_size for e in range(self.epochs) for s in range(self.steps_per_epoch)}
        return sorted(sizes)

    # -- composition and serialisation --------------------------------------------------------------
    def replace(self, **overrides: Any) -> "Schedule":
        """A copy with some knobs' rules (or values, or another Schedule's rule for that knob) replaced."""
        return combine(self, **overrides)

    def to_dict(self) -> dict:
        """JSON-able description (``format``, run length, size policy, name, one dict per rule). A
        ``lowpass_filter`` left at its default is not written, so schedules (and their fingerprints, kept in
        checkpoints) from before that knob existed read the same."""
        rules = {k: self.rules[k].to_dict() for k in KNOBS
                 if k != "lowpass_filter" or self.rules[k] != Constant(_DEFAULTS[k])}
        return {"format": SCHEDULE_FORMAT, "name": self.name, "epochs": self.epochs,
                "steps_per_epoch": self.steps_per_epoch, "patch_size": self.patch_size,
                "round_sizes": self.round_sizes, "rules": rules}

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        if not isinstance(d, dict):
            raise StateError(f"schedule must be a dict, got {type(d).__name__}")
        check_format("schedule", d.get("format"), SCHEDULE_FORMAT)
        rules = {k: Rule.from_dict(v) for k, v in d.get("rules", {}).items()}
        return cls(epochs=d["epochs"], steps_per_epoch=d["steps_per_epoch"], patch_size=d.get("patch_size"),
                   round_sizes=d.get("round_sizes", True), name=d.get("name"), **rules)

    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON of :meth:`to_dict`."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        rules = ", ".join(f"{k}={v!r}" for k, v in self.rules.items())
        return f"Schedule(name={self.name!r}, epochs={self.epochs}, steps_per_epoch={self.steps_per_epoch}, {rules})"


def combine(base: Schedule, **overrides: Any) -> Schedule:
    """``base`` with some knobs replaced. Each override is a Rule, a plain value, or a Schedule (its rule for
    that knob is taken; it must have the same epochs and steps_per_epoch)."""
    rules = dict(base.rules)
    names = [base.name or "custom"]
    for knob, value in overrides.items():
        if knob not in KNOBS:
            raise ConfigError(f"unknown schedule knob {knob!r}; known: {list(KNOBS)}", (knob,))
        if isinstance(value, Schedule):
            if (value.epochs, value.steps_per_epoch) != (base.epochs, base.steps_per_epoch):
                raise ConfigError(f"cannot combine schedules of different lengths: {base.epochs} epochs x "
                                  f"{base.steps_per_epoch} steps and {value.epochs} x {value.steps_per_epoch}",
                                  ("epochs", "steps_per_epoch"))
            names.append(f"{knob}:{value.name or 'custom'}")
        else:
            names.append(f"{knob}:{_as_rule(value, knob).type}")
        rules[knob] = _as_rule(value, knob)
    return Schedule(epochs=base.epochs, steps_per_epoch=base.steps_per_epoch, patch_size=base.patch_size,
                    round_sizes=base.round_sizes, name="+".join(names), **rules)


# Magnitudes on timm's 0..10 scale map to 101 bins, so a bin is 0.1 of timm's unit.
NUM_MAG_BINS = 101
MAX_MAGNITUDE = 10.0


def magnitude_to_bin(m: np.ndarray | float) -> np.ndarray:
    """timm-scale magnitude (0..10, clipped) -> int32 bin in [0, NUM_MAG_BINS)."""
    m = np.clip(np.asarray(m, np.float64), 0.0, MAX_MAGNITUDE)
    return np.rint(m * (NUM_MAG_BINS - 1) / MAX_MAGNITUDE).astype(np.int32)
