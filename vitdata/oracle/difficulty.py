"""The difficulty oracle: per-sample feedback from the trainer, DDP/KAR training-stage metrics, and the
next epoch's plan (sampling weights, kept set, per-sample augmentation strength, loss weights).

The trainer (through ``Loader.report``) calls :meth:`DifficultyOracle.report` every step with the batch's
sample ids and per-sample losses (and, optionally, logits and labels). ``report`` only appends to
device-side buffers: no ``.item()``, ``.cpu()`` or data-dependent Python branch, so it never waits for
the GPU. :meth:`DifficultyOracle.end_epoch` is the one sync point: it gathers every rank's pending
reports (under ``torch.distributed``), folds them into the per-sample table in one canonical order, so
every rank holds a bit-identical table, computes the epoch's metrics and asks the policy for the
next epoch's :class:`vitdata.data.sampler.EpochPlan`.

Per-sample table (``N`` samples; 25 bytes per sample, 32 MB for ImageNet-1K's 1.28 M):

==================  ========  ==============================================================
``last_loss``       float32   loss at the latest visit
``ema_loss``        float32   EMA of the loss over visits (``ema`` decay; the first visit sets it)
``p_y``             float16   probability of the true class at the latest visit
``ema_difficulty``  float16   EMA of ``1 - p_y`` over visits
``seen``            int32     number of visits
``forgetting``      int32     forgetting events: transitions correct -> incorrect between visits
``last_epoch``      int32     epoch of the latest visit (-1 = never)
``last_correct``    uint8     1 if the latest visit was classified correctly
==================  ========  ==============================================================

The DDP/KAR metrics, the training periods and ``p_y`` are defined in :mod:`vitdata.oracle.metrics`; the
reports waiting for a fold live in :mod:`vitdata.oracle.reports`, and :mod:`vitdata.oracle.gather` collects
them across ranks.

Skipped ids
-----------
A sample the loader skips (a bad file, read by a substitute) is never reported: its table row stays as
it was (docs/reliability.md C4). The loader flags it instead (:meth:`DifficultyOracle.mark_skipped`, called with
the epoch's skip list just before ``end_epoch``); the flags of all ranks are gathered at ``end_epoch``.
An id flagged in the epoch being ended and not reported in that epoch is *skip-flagged* until an epoch
reports it; ``OracleTable.skipped`` hands the flags to the policy. The weighted policy gives a
skip-flagged id the floor weight (difficulty 0) instead of the never-seen prior (difficulty 1), so a
permanently bad file is drawn about ``floor`` times per epoch, below an average id's once, not up to
``cap`` times; it is still drawn, so a repaired file is read again and leaves the flag.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import numpy as np
import torch

from vitdata.errors import ConfigError, StateError, check_format
from vitdata.oracle.gather import dist_world, gather_reports, gather_skips
from vitdata.oracle.metrics import PERIODS, Thresholds, epoch_metrics, jsonable, own_label_p
from vitdata.oracle.reports import PendingReports, read_report
from vitdata.oracle.policies import (POLICIES, DataCentricPolicy, OracleTable, Policy, PruneEasyPolicy, UniformPolicy, WeightedPolicy, plan_summary, register_policy)
from vitdata.data.sampler import EpochPlan

__all__ = ["DifficultyOracle", "OracleTable", "Policy", "UniformPolicy", "DataCentricPolicy", "PruneEasyPolicy",
           "WeightedPolicy", "POLICIES", "register_policy", "PERIODS", "own_label_p"]

FORMAT_VERSION = 1
_POLICY_TAG = 0x0AC1_0001   # keeps the policies' (seed, epoch) stream apart from the sampler's

# name -> (dtype, initial value). Order fixes the digest and the state layout.
_TABLE = {
    "last_loss": (torch.float32, 0.0),
    "ema_loss": (torch.float32, 0.0),
    "p_y": (torch.float16, 0.0),
    "ema_difficulty": (torch.float16, 1.0),
    "seen": (torch.int32, 0),
    "forgetting": (torch.int32, 0),
    "last_epoch": (torch.int32, -1),
    "last_correct": (torch.uint8, 0),
}


# --------------------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------------------

def _default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run a CPU table update on one intra-op thread. The fold is random gathers and scatters over
    N-sized arrays, bound by memory latency: more threads only add barrier spinning. On the 2-core CI
    machine, N = 1.28 M: 0.30-0.40 s on one thread, 0.83-1.55 s on two when anything else is running."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class DifficultyOracle:
    """Per-sample difficulty table fed by the trainer's losses; DDP/KAR metrics; the next epoch's plan.

    Args:
        num_samples: N, the dataset size; ids are index positions in ``[0, N)``.
        policy: a name in ``POLICIES`` ("uniform", "data-centric", "prune-easy", "weighted") or a
            :class:`Policy` instance.
        alpha, beta: ``p_y`` thresholds of easy (``>= alpha``) and hard (``<= beta``) samples.
        ema: decay of the per-sample loss and difficulty EMAs (new = ema * old + (1 - ema) * value).
        kar_window: epochs averaged into the reported ``kar`` (1 = raw).
        growth_margin, explore_kar_frac: period thresholds (see the module docstring).
        hist_bins: number of equal-width bins of the difficulty histogram over [0, 1].
        device: where the table and buffers live (default: the current CUDA device, else CPU).
        seed: seeds the policies' per-epoch generator (from (tag, seed, epoch of the plan)).
        process_group: the torch.distributed group to gather over (default: the world, when initialised).
        **policy_kwargs: passed to the policy class (e.g. ``floor=0.3`` for "weighted").

    Sync points: ``end_epoch``, ``sync`` and ``table_arrays`` fold the pending reports; under
    ``torch.distributed`` they are collectives, so every rank must call them at the same point.
    ``state_dict`` is rank-local (no communication): it may be called on one rank only.
    """

    def __init__(self, num_samples: int, policy: str | Policy = "uniform", *, alpha: float = 0.8, beta: float = 0.3,
                 ema: float = 0.9, kar_window: int = 3, growth_margin: float = 0.0, explore_kar_frac: float = 0.25,
                 hist_bins: int = 10, device: str | torch.device | None = None, seed: int = 0,
                 process_group=None, **policy_kwargs):
        if int(num_samples) < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}", ("num_samples",))
        if not 0.0 <= beta < alpha <= 1.0:
            raise ConfigError(f"need 0 <= beta < alpha <= 1, got alpha={alpha}, beta={beta}", ("alpha", "beta"))
        if not 0.0 <= ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1), got {ema}", ("ema",))
        if int(kar_window) < 1:
            raise ConfigError(f"kar_window must be >= 1, got {kar_window}", ("kar_window",))
        if not 0.0 <= explore_kar_frac <= 1.0:
            raise ConfigError(f"explore_kar_frac must be in [0, 1], got {explore_kar_frac}", ("explore_kar_frac",))
        if int(hist_bins) < 1:
            raise ConfigError(f"hist_bins must be >= 1, got {hist_bins}", ("hist_bins",))
        self.num_samples = int(num_samples)
        self.alpha, self.beta, self.ema = float(alpha), float(beta), float(ema)
        self.kar_window, self.growth_margin = int(kar_window), float(growth_margin)
        self.explore_kar_frac, self.hist_bins, self.seed = float(explore_kar_frac), int(hist_bins), int(seed)
        self.device = torch.device(device) if device is not None else _default_device()
        self.process_group = process_group
        if isinstance(policy, Policy):
            if policy_kwargs:
                raise ConfigError("policy keyword arguments given with a Policy instance", tuple(policy_kwargs))
            self.policy = policy
        else:
            if policy not in POLICIES:
                raise ConfigError(f"unknown policy {policy!r}; choose one of {sorted(POLICIES)}", ("policy",))
            try:
                self.policy = POLICIES[policy](**policy_kwargs)
            except TypeError as e:
                raise ConfigError(f"bad arguments for policy {policy!r}: {e}", tuple(policy_kwargs)) from None
        self.hist_edges = np.linspace(0.0, 1.0, self.hist_bins + 1).tolist()
        self._thresholds = Thresholds(self.alpha, self.beta, self.kar_window, self.growth_margin,
                                      self.explore_kar_frac, self.hist_bins)

        self._t = {k: torch.full((self.num_samples,), v, dtype=dt, device=self.device) for k, (dt, v) in _TABLE.items()}
        self.epoch = 0                     # the epoch whose reports are pending
        self.period = "formation"
        self.metrics: list[dict] = []
        self.plan = None                   # the current EpochPlan (the one in use), None = uniform
        self._loss_weight = None           # device float32[N] copy of plan.loss_weight
        self._epoch_reports = 0            # valid entries folded for self.epoch (across ranks)
        self._epoch_ignored = 0
        self._epoch_forget0 = 0            # forgetting total when self.epoch started
        self._pending = PendingReports(self.device)   # reports since the last fold
        self._skip_flag = np.zeros(self.num_samples, dtype=bool)   # skip-flagged ids (module doc)
        self._skip_pending: list[np.ndarray] = []                     # this rank's mark_skipped ids

    # ---------------------------------------------------------------------------------------- report
    def reserve(self, n: int) -> None:
        """Preallocate room for ``n`` pending report entries (e.g. one epoch's worth on this rank), so
        ``report`` never reallocates its buffers (growth is otherwise amortised by doubling)."""
        self._pending.reserve(int(n))

    @property
    def pending_reports(self) -> int:
        """Report entries on this rank not folded into the table yet."""
        return self._pending.n

    def report(self, ids: torch.Tensor, losses: torch.Tensor, *, logits: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, correct: torch.Tensor | None = None,
               p_true: torch.Tensor | None = None, own_labels: torch.Tensor | None = None) -> None:
        """Record one batch: ``ids`` (B,) int, ``losses`` (B,) float, per sample, before any reduction.

        Optional: ``logits`` (B, C) with ``labels`` (B,) int or (B, C) soft targets -> ``p_y`` and
        ``correct`` (the label's logit is the largest; for soft targets, the label with the most mass);
        ``own_labels`` (B,) int, with soft ``labels``: each sample's label before mixing (``p_y`` is its
        probability over its share of the target, :func:`own_label_p`); ``p_true`` (B,) the true-class
        probability (overrides logits); ``correct`` (B,) bool. Without logits or ``p_true``, ``p_y = exp(-loss)``; without logits or
        ``correct``, ``correct = p_y > 0.5`` (sufficient for argmax == label).

        Never synchronises with the device when the tensors live on the oracle's device (the loader's
        ``Batch.ids`` and the trainer's losses do): they are copied into device buffers and folded at
        the next ``end_epoch``/``sync``. Tensors on another device are copied over,
        which may block. Ids < 0 (padding, skipped samples) and
        non-finite losses are dropped at fold time and counted in the metrics (``n_ignored``).
        """
        if ids.dim() != 1 or losses.shape != ids.shape:
            raise ValueError(f"report: ids and losses must both have shape (B,), got {tuple(ids.shape)} "
                             f"and {tuple(losses.shape)}")
        if ids.shape[0] == 0:
            return
        loss, p, c = read_report(losses, self.device, logits=logits, labels=labels, correct=correct, p_true=p_true,
                                 own_labels=own_labels)
        self._pending.append(ids, loss, p, c)

    def mark_skipped(self, ids) -> None:
        """Flag ids this rank's loader skipped in the current epoch (``Loader`` calls it with its skip
        list before ``end_epoch``). Not a loss report: the table and the report counts are untouched. The
        flags are gathered from every rank at the next ``end_epoch``; see "Skipped ids" in the module doc."""
        a = np.asarray(ids.detach().cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
        a = a[a >= 0]
        if a.size and int(a.max()) >= self.num_samples:
            raise ValueError(f"mark_skipped: sample id {int(a.max())} out of range for num_samples={self.num_samples}")
        if a.size:
            self._skip_pending.append(a)

    def _fold_skips(self) -> int:
        """Gather every rank's pending skip flags (a collective under torch.distributed), flag them, and
        clear the ids reported in the epoch being ended. Returns the number of distinct ids flagged."""
        local = np.unique(np.concatenate(self._skip_pending)) if self._skip_pending else np.zeros(0, np.int64)
        self._skip_pending = []
        local = gather_skips(local, self.device, self.process_group)
        self._skip_flag[local] = True
        self._skip_flag &= self._t["last_epoch"].cpu().numpy() != self.epoch
        return int(local.size)

    # ------------------------------------------------------------------------------------------ fold
    def _dist(self):
        return dist_world(self.process_group)

    def _take_pending(self) -> tuple[torch.Tensor, ...]:
        """The pending entries as (ids, loss, p, correct); under torch.distributed, every rank's, in the
        canonical order (:func:`vitdata.oracle.gather.gather_reports`). Empties the buffers."""
        (ids, loss, p, c), counts = self._pending.take()
        return gather_reports(ids, loss, p, c, counts, self.device, self.process_group)

    def _fold(self) -> None:
        ids, loss, p, c = self._take_pending()
        if ids.numel() == 0:
            return
        if bool((ids >= self.num_samples).any()):
            bad = int(ids.max())
            raise ValueError(f"report: sample id {bad} out of range for num_samples={self.num_samples}")
        valid = (ids >= 0) & torch.isfinite(loss) & torch.isfinite(p)
        nvalid = int(valid.sum())
        self._epoch_ignored += int(ids.numel()) - nvalid
        self._epoch_reports += nvalid
        if nvalid == 0:
            return
        if nvalid < ids.numel():
            ids, loss, p, c = ids[valid], loss[valid], p[valid], c[valid]
        p = p.clamp(0.0, 1.0)
        # Apply the entries in order, as if one by one. Repeated ids (weighted sampling draws with
        # replacement) go in rounds: round k holds each id's k-th occurrence, so every index_put has
        # unique indices and the result is deterministic on every device. Cost: one round per repeat
        # count, which the weighted policy's cap bounds (about cap rounds per epoch).
        counts = torch.bincount(ids, minlength=self.num_samples)
        if int(counts.max()) <= 1:
            self._apply(ids, loss, p, c)
            return
        m = ids.numel()
        idx = torch.arange(m, device=ids.device)
        while idx.numel():
            sid = ids[idx]
            first = torch.full((self.num_samples,), m, dtype=torch.int64, device=ids.device)
            first.scatter_reduce_(0, sid, idx, "amin")        # min is order-free: deterministic everywhere
            mine = first[sid] == idx                           # each remaining id's earliest entry
            sel = idx[mine]
            self._apply(ids[sel], loss[sel], p[sel], c[sel])
            idx = idx[~mine]

    def _apply(self, u, loss, p, c) -> None:
        t, keep = self._t, 1.0 - self.ema
        seen = t["seen"][u]
        first = seen == 0
        old = t["ema_loss"][u]
        t["ema_loss"][u] = torch.where(first, loss, old + keep * (loss - old))
        d = 1.0 - p
        oldd = t["ema_difficulty"][u].float()
        t["ema_difficulty"][u] = torch.where(first, d, oldd + keep * (d - oldd)).half()
        t["last_loss"][u] = loss
        t["p_y"][u] = p.half()
        t["forgetting"][u] += (t["last_correct"][u].bool() & ~c & ~first).int()
        t["last_correct"][u] = c.to(torch.uint8)
        t["seen"][u] = seen + 1
        t["last_epoch"][u] = self.epoch

    def sync(self) -> None:
        """Fold the pending reports into the table (a host sync; a collective under torch.distributed)."""
        self._fold()

    # ------------------------------------------------------------------------------------- end_epoch
    def set_epoch(self, epoch: int) -> None:
        """Tag the reports that follow with ``epoch`` (folds the pending ones under the old tag first)."""
        if int(epoch) != self.epoch:
            self._fold()
            self._start_epoch(int(epoch))

    def _start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._epoch_reports = self._epoch_ignored = 0
        self._epoch_forget0 = int(self._t["forgetting"].sum())

    def end_epoch(self, epoch: int | None = None):
        """Finish ``epoch`` (default: the current one): fold, record metrics, return the next plan.

        Pending reports are tagged ``epoch``; reports folded earlier in the epoch (by ``sync``) carry the tag current then, so call :meth:`set_epoch` when an epoch starts
        (``Loader.set_epoch`` does) if the run does not start at epoch 0.

        The one host sync of an epoch. Under torch.distributed every rank must call it; all ranks
        return the same plan (NumPy arrays) and hold a bit-identical table. The plan is also kept as
        ``self.plan`` and drives :meth:`loss_weights` from now on.
        """
        if epoch is not None:
            self.epoch = int(epoch)   # the pending reports belong to the epoch being ended
        with _one_cpu_thread(self.device):
            self._fold()
            m = epoch_metrics(self._t, self.epoch, self.metrics, self.period, self._thresholds,
                              reports=self._epoch_reports, ignored=self._epoch_ignored, forget0=self._epoch_forget0)
            self.period = m["period"]
            m["n_skipped"] = self._fold_skips()
            table = self._host_table()
            rng = np.random.default_rng([_POLICY_TAG, self.seed, self.epoch + 1])
            plan = self.policy.plan(table, self.epoch + 1, m, rng).validate(self.num_samples)
        m["plan"] = plan_summary(plan)
        self.metrics.append({k: jsonable(v) for k, v in m.items()})
        self._set_plan(plan)
        self._start_epoch(self.epoch + 1)
        return plan

    def mix_prob(self) -> float | None:
        """The policy's share of Mixup/CutMix batches for the epoch planned last (None: the trainer's own)."""
        return self.policy.mix_prob()

    @property
    def last_metrics(self) -> dict | None:
        return self.metrics[-1] if self.metrics else None

    def _host_table(self) -> OracleTable:
        a = self.table_arrays(fold=False)
        return OracleTable(last_loss=a["last_loss"], ema_loss=a["ema_loss"], p_y=a["p_y"].astype(np.float32),
                           ema_difficulty=a["ema_difficulty"].astype(np.float32), seen=a["seen"],
                           forgetting=a["forgetting"], last_epoch=a["last_epoch"],
                           last_correct=a["last_correct"].astype(bool), epoch=self.epoch, alpha=self.alpha,
                           beta=self.beta, skipped=self._skip_flag.copy())

    def _set_plan(self, plan) -> None:
        self.plan = plan
        lw = None if plan is None else plan.loss_weight
        self._loss_weight = None if lw is None else torch.from_numpy(np.ascontiguousarray(lw, np.float32)).to(self.device)

    # ------------------------------------------------------------------------------------ consumers
    def loss_weights(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-sample loss weights (float32, on ``ids``' device) from the current plan; no host sync.

        1 where the plan has no ``loss_weight``; 0 for ids < 0 (padding), so ``(w * loss).sum()``
        ignores them.
        """
        ids = ids.detach()
        valid = ids >= 0
        if self._loss_weight is None:
            return valid.to(torch.float32)
        lw = self._loss_weight.to(ids.device) if self._loss_weight.device != ids.device \
            else self._loss_weight
        return torch.where(valid, lw[ids.clamp(min=0).long()], torch.zeros((), dtype=torch.float32, device=ids.device))

    def table_arrays(self, fold: bool = True) -> dict[str, np.ndarray]:
        """Host copies of the table (fold first by default: a sync; a collective when distributed)."""
        if fold:
            self._fold()
        return {k: v.cpu().numpy().copy() for k, v in self._t.items()}

    def table_digest(self) -> str:
        """sha256 hex over the table arrays (name, dtype, bytes), e.g. to check rank agreement."""
        h = hashlib.sha256()
        for k, v in self.table_arrays().items():
            h.update(k.encode() + str(v.dtype).encode() + v.tobytes())
        return h.hexdigest()

    # ----------------------------------------------------------------------------------------- state
    def config(self) -> dict:
        return {"num_samples": self.num_samples, "policy": self.policy.name, "alpha": self.alpha, "beta": self.beta,
                "ema": self.ema, "kar_window": self.kar_window, "growth_margin": self.growth_margin,
                "explore_kar_frac": self.explore_kar_frac, "hist_bins": self.hist_bins, "seed": self.seed,
                "policy_config": self.policy.config()}

    def _rank_world(self) -> tuple[int, int]:
        d, world = self._dist()
        return (0, 1) if d is None else (d.get_rank(self.process_group), world)

    def state_dict(self) -> dict[str, Any]:
        """This rank's state, taken without any communication: plain data (JSON-able scalars, lists and
        dicts plus NumPy arrays; ``vitdata.io.to_json`` makes it pure JSON text, and
        ``load_state_dict`` takes either form).

        Rank-local: the table is the one merged at the last ``end_epoch`` (identical on every rank, since
        nothing folds between epoch ends unless ``sync``/``table_arrays`` is called on every rank), plus
        this rank's pending reports since then (``pending``). Any single rank's state is therefore enough
        to resume, so a trainer may save on rank 0 only. A rank that loads its own state gets its pending
        reports back and the next ``end_epoch`` equals the uninterrupted run's; a rank that loads another
        rank's state (rank-0-only checkpoints) drops them: those reports are lost, as are reports made
        after the state was taken (docs/reliability.md C2). ``Loader`` ends each epoch as its last batch is
        consumed, so a state taken between epochs has nothing pending and resumes exactly on every rank.
        """
        plan = None
        if self.plan is not None:
            plan = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.plan.to_state().items()}
        rank, world = self._rank_world()
        pending = self._pending.state(rank, world)
        return {"format_version": FORMAT_VERSION, "config": self.config(), "epoch": self.epoch, "period": self.period,
                "epoch_reports": self._epoch_reports, "epoch_ignored": self._epoch_ignored,
                "epoch_forget0": self._epoch_forget0, "metrics": json.loads(json.dumps(self.metrics)),
                "policy_state": dict(self.policy.state_dict()), "plan": plan,
                "table": self.table_arrays(fold=False), "skipped": self._skip_flag.astype(np.uint8),
                "skip_pending": [int(i) for a in self._skip_pending for i in a], "pending": pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (arrays as NumPy or as ``vitdata.io`` text); refuses a different
        format, size, policy or configuration. Pending reports come back only on the rank (and world size)
        that saved them; see :meth:`state_dict`."""
        from vitdata.io import from_json

        state = from_json(state)
        check_format("oracle state", state.get("format_version"), FORMAT_VERSION)
        mine, theirs = self.config(), state["config"]
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            detail = ", ".join(f"{k}: saved {theirs.get(k)!r} vs {mine.get(k)!r}" for k in diff)
            raise StateError(f"oracle state does not match this oracle's configuration ({detail})")
        table = state["table"]
        for k, (dt, _) in _TABLE.items():
            a = np.asarray(table[k])
            want = torch.empty((), dtype=dt).numpy().dtype
            if a.shape != (self.num_samples,) or a.dtype != want:
                raise StateError(f"oracle state: table array {k!r} has shape {a.shape} dtype {a.dtype}, "
                                 f"expected ({self.num_samples},) {want}")
        self._pending.clear()
        for k in _TABLE:
            self._t[k].copy_(torch.from_numpy(np.ascontiguousarray(table[k])))
        self._pending.restore(state.get("pending"), *self._rank_world())
        # Skip flags (absent in states written before they existed: none flagged).
        flags = np.asarray(state.get("skipped", np.zeros(self.num_samples, np.uint8)))
        if flags.shape != (self.num_samples,):
            raise StateError(f"oracle state: 'skipped' has shape {flags.shape}, expected ({self.num_samples},)")
        self._skip_flag = flags.astype(bool)
        pending = np.asarray(state.get("skip_pending", []), dtype=np.int64)
        self._skip_pending = [pending] if pending.size else []
        self.epoch, self.period = int(state["epoch"]), str(state["period"])
        self._epoch_reports, self._epoch_ignored = int(state["epoch_reports"]), int(state["epoch_ignored"])
        self._epoch_forget0 = int(state["epoch_forget0"])
        self.metrics = json.loads(json.dumps(state["metrics"]))
        self.policy.load_state_dict(state["policy_state"])
        plan = state["plan"]
        if plan is None:
            self._set_plan(None)
        else:
            self._set_plan(EpochPlan.from_state(plan))


def make_oracle(oracle, num_samples: int, *, seed: int = 0, device=None, epochs: int | None = None,
                source: str = "the data source", **options):
    """``create_loader``'s oracle: None, a policy name (a :class:`DifficultyOracle` of ``num_samples`` seeded
    with ``seed``; ``epochs`` is the run's length, which prune-easy anneals by; ``options`` go to the policy),
    or an oracle object whose ``num_samples`` must equal the data's (``source`` names the data in the error)."""
    if oracle is None:
        return None
    if isinstance(oracle, str):
        if oracle not in POLICIES:
            raise ConfigError(f"unknown oracle policy {oracle!r}; choose one of {sorted(POLICIES)} or pass a "
                              f"DifficultyOracle", ("oracle",))
        if oracle == "prune-easy":
            options.setdefault("epochs", epochs)
        return DifficultyOracle(num_samples, oracle, seed=seed, device=device, **options)
    if options:
        raise ConfigError(f"oracle options {sorted(options)} apply to a policy name, not to a ready oracle object",
                          ("oracle",))
    theirs = getattr(oracle, "num_samples", None)
    if theirs is not None and int(theirs) != num_samples:
        raise ConfigError(f"the oracle has num_samples={theirs} but {source} holds {num_samples} samples: build it "
                          f"with DifficultyOracle(num_samples=loader.num_samples, ...) or pass "
                          f"oracle='<policy name>' to create_loader", ("oracle.num_samples",))
    return oracle
