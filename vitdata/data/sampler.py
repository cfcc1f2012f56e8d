"""The epoch order of sample ids, per rank: a pure function of (seed, epoch, rank, world size, plan).

One epoch is laid out the same way on every rank. The *global order* (the planned id list, length D)
is drawn from a NumPy ``Generator(PCG64)`` seeded from ``(seed, epoch)`` only; it never depends on the
world size or the rank, and never touches the global NumPy or Python RNG. The global order is then cut
into global steps of ``G = world_size * batch_size`` ids; global step ``s`` holds
``order[s*G:(s+1)*G]`` and rank ``r`` takes columns ``[r*batch, (r+1)*batch)`` of it. Two consequences:

- every rank runs the same number of steps, and the ranks' ids are disjoint parts of the epoch;
- a resume with another world size but the same global batch sees the same ids in every global step
  (docs/reliability.md B4): only the split of a step between ranks changes.

What the order is made of depends on the :class:`EpochPlan` (``None`` = uniform):

==============  =====================================================================================
plan            global order (D ids)
==============  =====================================================================================
``None``        a permutation of ``0..N-1`` (``shuffle=False``: ``0..N-1`` in order); D = N
``kept``        a permutation of the kept ids, each once; D = number kept
``weights``     ``num_draws`` ids (default N) drawn with probability ∝ weights by systematic
                resampling (one uniform offset, so id i appears ⌊D·p_i⌋ or ⌈D·p_i⌉ times), then shuffled
both            weights restricted to the kept ids (weights outside ``kept`` count as 0)
==============  =====================================================================================

End of epoch (:class:`EpochEnd`): with N = 10, batch 2, world 2 (G = 4), ``shuffle=False``:

========  ============  ==========================  ==========================  ==========================
mode      steps/rank    step 0 (rank 0 | rank 1)    step 1                      step 2
========  ============  ==========================  ==========================  ==========================
DROP      2             [0 1] | [2 3]               [4 5] | [6 7]               —  (8, 9 not read)
PAD       3             [0 1] | [2 3]               [4 5] | [6 7]               [8 -1] | [9 -1]
========  ============  ==========================  ==========================  ==========================

- ``DROP`` (``drop_last=True``, training): the ``D mod G`` ids that do not fill a global step are not
  read this epoch. With shuffling they differ from epoch to epoch.
- ``PAD`` (``drop_last=False``, evaluation): the last global step is partial. Its ids are dealt round
  robin (tail id j goes to rank ``j % world``, slot ``j // world``), so ranks' real counts differ by at
  most one, and the rest is padding id ``-1``. Every id is read exactly once across ranks; real padding
  is at most ``world_size - 1`` per epoch once a loader trims the trailing -1 columns that every rank
  shares, and at most ``G - 1`` counting full batches. Consumers must drop ``-1`` from metrics and
  oracle reports.

Resume: the state is ``(seed, epoch, position, plan)``; ``position`` counts global steps consumed in
the epoch. :meth:`Sampler.remaining_ids` recomputes the epoch order (O(D): 20-50 ms for 1.28 M ids on
the CI CPU) and slices it, so resuming at any position costs the same.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
import zipfile
import zlib
from typing import Iterator

import numpy as np

from vitdata.errors import ConfigError, StateError, check_format, check_int
from vitdata.io import atomic_write

__all__ = ["EpochEnd", "EpochPlan", "Sampler", "PAD_ID", "resume_batch_size", "check_resume",
           "PLAN_FORMAT", "STATE_FORMAT"]

PAD_ID = -1
PLAN_FORMAT = 1
STATE_FORMAT = 1

# Domain tags keep the sampler's streams apart from any other (seed, epoch)-seeded stream in vitdata.
_ORDER_TAG = 0x5A4D_0001


class EpochEnd(enum.Enum):
    """What happens to the ids that do not fill the last global step (worked table in the module doc)."""

    DROP = "drop"   # not read this epoch (training)
    PAD = "pad"     # read once, the partial step padded with PAD_ID (evaluation)


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in words])))


# --------------------------------------------------------------------------------------------------
# EpochPlan
# --------------------------------------------------------------------------------------------------

_PLAN_ARRAYS = {  # field -> dtype
    "weights": np.float64,
    "kept": np.bool_,
    "aug_magnitude": np.float32,
    "erase_ratio": np.float32,
    "loss_weight": np.float32,
}


@dataclasses.dataclass(eq=False)
class EpochPlan:
    """What the difficulty oracle hands the sampler (and the loader) for one epoch.

    Every array is 1-D of length N (the number of samples in the index) or None.

    - ``weights`` float64 >= 0: draw ``num_draws`` ids with probability ∝ weights (with replacement,
      systematic resampling). Not all zero.
    - ``kept`` bool: only these ids this epoch, each once. With ``weights`` too, the draw is restricted
      to the kept ids.
    - ``aug_magnitude`` float32: added to the schedule's RandAugment magnitude (timm 0..10 scale).
    - ``erase_ratio`` float32 in [0, 1]: per-sample PatchErasing boost, added to the schedule's ratio
      (:func:`vitdata.oracle.policies.boosted_erase_ratio`).
    - ``loss_weight`` float32 >= 0: per-sample loss weight (prune-easy rescaling); 1 = unchanged.
    - ``num_draws``: draws in weights mode (default N); only meaningful with ``weights``.

    Arrays are converted to the dtypes above on construction; :meth:`validate` checks them against N.
    """

    weights: np.ndarray | None = None
    kept: np.ndarray | None = None
    aug_magnitude: np.ndarray | None = None
    erase_ratio: np.ndarray | None = None
    loss_weight: np.ndarray | None = None
    num_draws: int | None = None

    def __post_init__(self):
        for name, dtype in _PLAN_ARRAYS.items():
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.asarray(value)
            if arr.ndim != 1:
                raise ConfigError(f"plan.{name} must be 1-D, got shape {arr.shape}", (f"plan.{name}",))
            if dtype is np.bool_ and arr.dtype != np.bool_:
                if arr.size and not np.isin(arr, (0, 1)).all():
                    raise ConfigError(f"plan.{name} must be a boolean mask (or 0/1)", (f"plan.{name}",))
            elif dtype is not np.bool_ and not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise ConfigError(f"plan.{name} must be numeric, got dtype {arr.dtype}", (f"plan.{name}",))
            setattr(self, name, np.ascontiguousarray(arr, dtype=dtype))
        if self.num_draws is not None:
            self.num_draws = check_int(self.num_draws, "plan.num_draws", 1)
            if self.weights is None:
                raise ConfigError("plan.num_draws is set but plan.weights is None (num_draws applies to "
                                  "weighted draws only)", ("plan.num_draws", "plan.weights"))

    # -- checks -------------------------------------------------------------------------------------
    def validate(self, num_samples: int) -> "EpochPlan":
        """Check every array against ``num_samples``; raise ConfigError naming the field. Returns self."""
        for name in _PLAN_ARRAYS:
            arr = getattr(self, name)
            if arr is None:
                continue
            field = f"plan.{name}"
            if arr.shape[0] != num_samples:
                raise ConfigError(f"{field} has length {arr.shape[0]}, expected num_samples = {num_samples}",
                                  (field, "num_samples"))
            if arr.dtype != np.bool_ and not np.isfinite(arr).all():
                bad = int(np.flatnonzero(~np.isfinite(arr))[0])
                raise ConfigError(f"{field} holds a non-finite value (first at id {bad})", (field,))
        if self.weights is not None:
            if (self.weights < 0).any():
                bad = int(np.flatnonzero(self.weights < 0)[0])
                raise ConfigError(f"plan.weights must be >= 0 (id {bad} has {self.weights[bad]})", ("plan.weights",))
            live = self.weights if self.kept is None else np.where(self.kept, self.weights, 0.0)
            if not live.sum() > 0:
                what = "plan.weights are all zero" + ("" if self.kept is None else " on the kept ids")
                raise ConfigError(what, ("plan.weights",) + (() if self.kept is None else ("plan.kept",)))
        if self.kept is not None and not self.kept.any():
            raise ConfigError("plan.kept keeps no sample", ("plan.kept",))
        if self.erase_ratio is not None and ((self.erase_ratio < 0) | (self.erase_ratio > 1)).any():
            raise ConfigError("plan.erase_ratio must lie in [0, 1]", ("plan.erase_ratio",))
        if self.loss_weight is not None and (self.loss_weight < 0).any():
            raise ConfigError("plan.loss_weight must be >= 0", ("plan.loss_weight",))
        return self

    @property
    def mode(self) -> str:
        """"uniform", "kept", "weights" or "weights+kept": what decides the epoch's ids."""
        if self.weights is not None:
            return "weights+kept" if self.kept is not None else "weights"
        return "kept" if self.kept is not None else "uniform"

    def draw_count(self, num_samples: int) -> int:
        """D, the length of the epoch's global order under this plan."""
        if self.weights is not None:
            return self.num_draws if self.num_draws is not None else num_samples
        if self.kept is not None:
            return int(np.count_nonzero(self.kept))
        return num_samples

    def digest(self) -> str:
        """sha256 hex of the plan's contents (ranks compare it to prove they hold the same plan)."""
        h = hashlib.sha256(f"plan-v{PLAN_FORMAT};num_draws={self.num_draws}".encode())
        for name in _PLAN_ARRAYS:
            arr = getattr(self, name)
            h.update(f";{name}=".encode())
            if arr is not None:
                h.update(arr.dtype.str.encode() + str(arr.shape).encode())
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    # -- serialisation ------------------------------------------------------------------------------
    def to_state(self) -> dict:
        """Plain dict: ``format``, ``num_draws`` (int or None) and each array field (ndarray or None)."""
        state: dict = {"format": PLAN_FORMAT, "num_draws": self.num_draws}
        for name in _PLAN_ARRAYS:
            state[name] = getattr(self, name)
        return state

    @classmethod
    def from_state(cls, state: dict) -> "EpochPlan":
        """Inverse of :meth:`to_state`; arrays may also be lists."""
        if not isinstance(state, dict):
            raise StateError(f"plan state must be a dict, got {type(state).__name__}")
        check_format("plan state", state.get("format"), PLAN_FORMAT)
        unknown = set(state) - set(_PLAN_ARRAYS) - {"format", "num_draws"}
        if unknown:
            raise StateError(f"plan state has unknown fields {sorted(unknown)}")
        nd = state.get("num_draws")
        return cls(num_draws=None if nd is None else int(nd),
                   **{name: state.get(name) for name in _PLAN_ARRAYS})

    def save(self, path: str | os.PathLike) -> None:
        """Write an uncompressed .npz atomically (temp file, fsync, rename); readable without pickle."""
        arrays = {"format": np.int64(PLAN_FORMAT),
                  "num_draws": np.int64(-1 if self.num_draws is None else self.num_draws)}
        for name in _PLAN_ARRAYS:
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EpochPlan":
        """Read a file written by :meth:`save`. StateError on a bad, truncated or newer file."""
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error, NotImplementedError,
                RuntimeError) as e:   # the last two: damaged compression-method or flags fields (see index.py)
            raise StateError(f"cannot read epoch plan {path}: {e}") from e
        if "format" not in data:
            raise StateError(f"{path} is not an epoch plan (no format field)")
        check_format(f"epoch plan {path}", int(data.pop("format")), PLAN_FORMAT)
        nd = int(data.pop("num_draws", -1))
        unknown = set(data) - set(_PLAN_ARRAYS)
        if unknown:
            raise StateError(f"{path} has unknown fields {sorted(unknown)}")
        return cls(num_draws=None if nd < 0 else nd, **data)


# --------------------------------------------------------------------------------------------------
# Resume across world sizes
# --------------------------------------------------------------------------------------------------

def resume_batch_size(global_batch_size: int, world_size: int) -> int:
    """The per-rank batch that keeps ``global_batch_size`` with ``world_size`` ranks.

    Raises ConfigError naming ``global_batch_size`` and ``world_size`` when it does not divide
    (e.g. 24 over 5 ranks).
    """
    g = check_int(global_batch_size, "global_batch_size", 1)
    w = check_int(world_size, "world_size", 1)
    if g % w:
        raise ConfigError(f"global batch size {g} is not divisible by world size {w}: a resume with another world "
                          f"size must keep the global batch and split it evenly", ("global_batch_size", "world_size"))
    return g // w


def check_resume(state: dict, *, world_size: int, batch_size: int) -> None:
    """Refuse a resume that would change the global batch (ConfigError naming the fields).

    ``state`` is a :meth:`Sampler.state_dict`. A different world size is fine when
    ``world_size * batch_size`` equals the saved ``world_size * batch_size``.
    """
    saved_g = int(state["world_size"]) * int(state["batch_size"])
    new_g = int(world_size) * int(batch_size)
    per_rank = resume_batch_size(saved_g, world_size)
    if new_g != saved_g:
        raise ConfigError(f"global batch size changed from {saved_g} (world size {state['world_size']} x batch "
                          f"{state['batch_size']}) to {new_g} (world size {world_size} x batch {batch_size}); "
                          f"use batch_size={per_rank} with world size {world_size}",
                          ("global_batch_size", "world_size", "batch_size"))


# --------------------------------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------------------------------

def _systematic_counts(weights: np.ndarray, draws: int, offset: float) -> np.ndarray:
    """How often each id is drawn: points (offset + k) / draws, k = 0..draws-1, on the weights' CDF.

    Id i gets ceil(c_i - offset) - ceil(c_{i-1} - offset) draws, where c is the CDF scaled to [0, draws].
    The sum is exactly ``draws`` and each count is floor or ceil of draws * p_i.
    """
    cdf = np.cumsum(weights, dtype=np.float64)
    cdf *= draws / cdf[-1]
    cdf[-1] = draws  # exact, whatever the rounding of the cumulative sum
    edges = np.ceil(cdf - offset).astype(np.int64)
    counts = np.empty_like(edges)
    counts[0] = edges[0]
    np.subtract(edges[1:], edges[:-1], out=counts[1:])
    return counts


class Sampler:
    """Epoch orders of sample ids for one rank (see the module docstring for the layout and end rule).

    Args:
        num_samples: N, ids are ``0..N-1`` (index positions).
        batch_size: per-rank batch.
        seed: >= 0; with the epoch it seeds the order.
        rank, world_size: this process's place; every rank computes the same global order.
        shuffle: False gives ids in ascending order (evaluation).
        drop_last: True -> :attr:`EpochEnd.DROP`, False -> :attr:`EpochEnd.PAD` (padding id -1).

    Mutable state is only ``epoch``, ``position`` (global steps consumed this epoch) and the plan;
    every order is recomputed from them, so :meth:`state_dict` is small apart from the plan arrays.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True):
        self.num_samples = check_int(num_samples, "num_samples", 1)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.seed = check_int(seed, "seed", 0)
        self.world_size = check_int(world_size, "world_size", 1)
        self.rank = check_int(rank, "rank", 0)
        if self.rank >= self.world_size:
            raise ConfigError(f"rank {rank} is not below world size {world_size}", ("rank", "world_size"))
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.position = 0
        self._plan: EpochPlan | None = None
        self._cache: tuple[int, np.ndarray] | None = None  # (epoch, global order) of the current plan
        self._check_steps(self.num_samples, "num_samples")

    # -- configuration ------------------------------------------------------------------------------
    @property
    def global_batch_size(self) -> int:
        return self.world_size * self.batch_size

    @property
    def epoch_end(self) -> EpochEnd:
        return EpochEnd.DROP if self.drop_last else EpochEnd.PAD

    @property
    def plan(self) -> EpochPlan | None:
        return self._plan

    def _check_steps(self, draws: int, field: str) -> None:
        if self.drop_last and draws < self.global_batch_size:
            raise ConfigError(f"{field} = {draws} ids cannot fill one global batch of {self.global_batch_size} "
                              f"(world_size {self.world_size} x batch_size {self.batch_size}) with drop_last",
                              (field, "batch_size", "world_size"))

    def set_plan(self, plan: EpochPlan | None) -> None:
        """Use ``plan`` for the orders computed from now on (None = uniform). Validated against N."""
        if plan is not None:
            if not isinstance(plan, EpochPlan):
                raise ConfigError(f"plan must be an EpochPlan or None, got {type(plan).__name__}", ("plan",))
            plan.validate(self.num_samples)
            self._check_steps(plan.draw_count(self.num_samples), "plan")
        self._plan = plan
        self._cache = None

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        """Move to ``epoch`` with ``position`` global steps already consumed."""
        self.epoch = check_int(epoch, "epoch", 0)
        steps = self.steps_per_epoch()
        self.position = check_int(position, "position", 0)
        if self.position > steps:
            raise ConfigError(f"position {position} is past the {steps} steps of epoch {epoch}", ("position",))

    # -- orders -------------------------------------------------------------------------------------
    def _draws(self) -> int:
        return self.num_samples if self._plan is None else self._plan.draw_count(self.num_samples)

    def epoch_order(self, epoch: int | None = None) -> np.ndarray:
        """The epoch's global order, np.int64[D]: the planned id list before the cut into steps.

        Independent of rank and world size. Read-only view of a cached array.
        """
        epoch = self.epoch if epoch is None else check_int(epoch, "epoch", 0)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = _rng(_ORDER_TAG, self.seed, epoch)
        plan, n = self._plan, self.num_samples
        if plan is None or plan.mode == "uniform":
            order = rng.permutation(n) if self.shuffle else np.arange(n, dtype=np.int64)
        elif plan.mode == "kept":
            order = np.flatnonzero(plan.kept)
            if self.shuffle:
                rng.shuffle(order)
        else:
            weights = plan.weights if plan.kept is None else np.where(plan.kept, plan.weights, 0.0)
            draws = plan.draw_count(n)
            counts = _systematic_counts(weights, draws, rng.random())
            order = np.repeat(np.arange(n, dtype=np.int64), counts)
            if self.shuffle:
                rng.shuffle(order)
        order = order.astype(np.int64, copy=False)
        order.flags.writeable = False
        self._cache = (epoch, order)
        return order

    def steps_per_epoch(self, epoch: int | None = None) -> int:
        """Steps on every rank (the same on all ranks). Depends on the plan, not on the epoch number."""
        draws, g = self._draws(), self.global_batch_size
        return draws // g if self.drop_last else -(-draws // g)

    def __len__(self) -> int:
        return self.steps_per_epoch()

    def global_epoch_ids(self, epoch: int | None = None) -> np.ndarray:
        """np.int64[steps, world*batch]; rank r owns columns [r*batch, (r+1)*batch). PAD_ID marks padding."""
        order = self.epoch_order(epoch)
        g, w, b = self.global_batch_size, self.world_size, self.batch_size
        full = order.size // g
        if self.drop_last or order.size % g == 0:
            out = order[: full * g].reshape(full, g)
            return out
        out = np.full((full + 1, g), PAD_ID, dtype=np.int64)
        out[:full] = order[: full * g].reshape(full, g)
        tail = order[full * g:]
        j = np.arange(tail.size)
        last = np.full((w, b), PAD_ID, dtype=np.int64)
        last[j % w, j // w] = tail
        out[full] = last.reshape(-1)
        out.flags.writeable = False
        return out

    def epoch_ids(self, epoch: int | None = None) -> np.ndarray:
        """This rank's ids, np.int64[steps, batch] (a fresh contiguous array)."""
        cols = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return np.ascontiguousarray(self.global_epoch_ids(epoch)[:, cols])

    def remaining_ids(self, epoch: int | None = None, position: int | None = None) -> np.ndarray:
        """This rank's ids from global step ``position`` on, np.int64[steps - position, batch].

        Defaults to the sampler's own epoch and position. Costs one order computation, whatever the position.
        """
        epoch = self.epoch if epoch is None else epoch
        position = self.position if position is None else check_int(position, "position", 0)
        ids = self.epoch_ids(epoch)
        if position > ids.shape[0]:
            raise ConfigError(f"position {position} is past the {ids.shape[0]} steps of epoch {epoch}", ("position",))
        return ids[position:]

    def __iter__(self) -> Iterator[np.ndarray]:
        """This rank's remaining batches of the current epoch; does not move ``position`` (the consumer does)."""
        return iter(self.remaining_ids())

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain data: JSON-able scalars and, under ``plan``, :meth:`EpochPlan.to_state` (ndarrays) or None."""
        return {"format": STATE_FORMAT, "seed": self.seed, "epoch": self.epoch, "position": self.position,
                "world_size": self.world_size, "rank": self.rank, "batch_size": self.batch_size,
                "num_samples": self.num_samples, "shuffle": self.shuffle, "drop_last": self.drop_last,
                "plan": None if self._plan is None else self._plan.to_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore epoch, position and plan, so :meth:`remaining_ids` equals the uninterrupted run's.

        This sampler keeps its own rank and world size. A different world size is accepted when the global
        batch is unchanged (each global step then holds the same ids); anything else, and a different seed,
        N, shuffle or drop_last, is refused with a ConfigError naming the field.
        """
        if not isinstance(state, dict):
            raise StateError(f"sampler state must be a dict, got {type(state).__name__}")
        check_format("sampler state", state.get("format"), STATE_FORMAT)
        missing = {"seed", "epoch", "position", "world_size", "batch_size"} - set(state)
        if missing:
            raise StateError(f"sampler state lacks {sorted(missing)}")
        for field in ("seed", "num_samples", "shuffle", "drop_last"):
            if field in state and state[field] != getattr(self, field):
                raise ConfigError(f"sampler {field} is {getattr(self, field)!r} but the saved state has "
                                  f"{state[field]!r}", (field,))
        check_resume(state, world_size=self.world_size, batch_size=self.batch_size)
        plan = state.get("plan")
        self.set_plan(None if plan is None else EpochPlan.from_state(plan))
        self.set_epoch(int(state["epoch"]), int(state["position"]))

    def __repr__(self) -> str:
        mode = "uniform" if self._plan is None else self._plan.mode
        return (f"Sampler(num_samples={self.num_samples}, batch_size={self.batch_size}, seed={self.seed}, "
                f"rank={self.rank}, world_size={self.world_size}, shuffle={self.shuffle}, "
                f"end={self.epoch_end.value}, plan={mode}, epoch={self.epoch}, position={self.position})")
