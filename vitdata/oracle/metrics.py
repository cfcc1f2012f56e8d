"""What the oracle measures: the true-class probability of a report, and each epoch's DDP/KAR metrics and
training period.

Operational definitions
-----------------------
The data-centric paper (Zhou et al., arXiv 2209.15006) names DDP, KAR and three training periods, but
its definitions could not be retrieved (UNCONFIRMED; see docs/methods.md §1). vitdata implements its own
operational definitions, all configurable on :class:`~vitdata.oracle.difficulty.DifficultyOracle`:

- difficulty of a sample = ``1 - p_y``. ``p_y`` is the softmax probability of the true class from
  ``logits`` and ``labels``; with soft (Mixup/CutMix) targets, the own label's probability over its share
  of the target (:func:`own_label_p`; 2-D ``labels`` with ``own_labels=``, else the label with the most
  mass stands in), or ``p_true=`` directly. Without either, ``p_y = exp(-loss)``: exact for
  cross-entropy with hard labels, a proxy otherwise.
- ``DDP_e`` = share of the samples visited this epoch whose latest ``p_y >= alpha`` (easy, 0.8);
  ``DDP_h`` = share with ``p_y <= beta`` (hard, 0.3); the rest are moderate.
- ``KAR_raw(t) = (|DDP_e(t) - DDP_e(t-1)| + |DDP_h(t) - DDP_h(t-1)|) / 2`` (0 at the first epoch),
  and ``kar`` = the mean of the last ``kar_window`` raw values (1 = raw).
- periods, monotone (never go back): ``formation`` while ``DDP_e <= DDP_h + growth_margin``;
  ``growth`` after that; ``exploration`` once ``kar <= explore_kar_frac * max(kar so far)`` while
  ``DDP_e > DDP_h``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PERIODS = ("formation", "growth", "exploration")


def own_label_p(logits: torch.Tensor, own: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) float32: ``softmax(logits)[own]`` over the own label's mixing share, clipped to [0, 1].

    logits (B, C); own (B,) int64, each sample's label before Mixup/CutMix; target (B, C) the soft target
    actually applied: the mix ``m`` (Mixup lambda or CutMix area on the own label, plus the partner's when
    it has the same class) with label smoothing folded in, ``(1 - eps) * m + eps / C`` as timm's Mixup
    builds it. The share is ``m[own]``, smoothing taken out: with C >= 3 classes some class gets the
    smoothing mass alone, so the row's smallest entry is ``eps / C`` and ``m = (target - eps / C) /
    (1 - eps)``. An unmixed sample (``m[own] = 1``) then reads its plain softmax probability, as without
    Mixup: dividing by the smoothed ``target[own]`` (0.91 at eps 0.1, 10 classes) moved the easy cut
    ``p_y >= 0.8`` to a softmax of 0.73. A mixed sample reads its probability over its share, so a model
    that predicts the mix scores about 1 whatever lambda is (the dot product ``sum(softmax * target)``
    capped such a model near ``sum(target**2)``, and a run never left formation).
    """
    b, c = target.shape
    idx = own.long().reshape(b, 1)
    prob = torch.softmax(logits.float(), dim=-1).gather(1, idx).reshape(b)
    t = target.float()
    share = t.gather(1, idx).reshape(b)
    if c >= 3:
        floor = t.amin(dim=-1)                       # eps / C: the smoothing mass of a class outside the mix
        share = (share - floor) / (1.0 - c * floor).clamp_min(1e-6)
    return (prob / share.clamp_min(1e-6)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Thresholds:
    """The oracle's settings that the metrics read (see the module docstring)."""
    alpha: float
    beta: float
    kar_window: int
    growth_margin: float
    explore_kar_frac: float
    hist_bins: int


def next_period(period: str, ddp_e: float, ddp_h: float, kar: float, peak: float, th: Thresholds) -> str:
    """The period after ``period`` given this epoch's shares and KAR (monotone: never goes back)."""
    if period == "formation" and ddp_e > ddp_h + th.growth_margin:
        period = "growth"
    if period == "growth" and ddp_e > ddp_h and peak > 0 and kar <= th.explore_kar_frac * peak:
        period = "exploration"
    return period


def epoch_metrics(table: dict[str, torch.Tensor], epoch: int, history: list[dict], period: str, th: Thresholds, *,
                  reports: int, ignored: int, forget0: int) -> dict:
    """The metrics of ``epoch`` from the per-sample ``table`` (after its reports were folded) and the
    earlier epochs' ``history``: report counts (``reports`` folded, ``ignored``), DDP shares, KAR, the
    period it leads to, the difficulty histogram, mean losses by class of difficulty, and the forgetting
    events since the epoch began (``forget0``: the forgetting total then)."""
    t = table
    vis = t["last_epoch"] == epoch
    n_vis = int(vis.sum())
    p = t["p_y"][vis].float()
    loss = t["last_loss"][vis].double()
    easy, hard = p >= th.alpha, p <= th.beta
    mod = ~(easy | hard)
    prev = history[-1] if history else None
    if n_vis:
        ddp_e, ddp_h = int(easy.sum()) / n_vis, int(hard.sum()) / n_vis
    else:  # nothing visited: carry the previous shares, so KAR reads 0
        ddp_e, ddp_h = (prev["ddp_e"], prev["ddp_h"]) if prev else (0.0, 0.0)
    kar_raw = 0.0 if prev is None else (abs(ddp_e - prev["ddp_e"]) + abs(ddp_h - prev["ddp_h"])) / 2.0
    raws = [mm["kar_raw"] for mm in history[-(th.kar_window - 1):]] if th.kar_window > 1 else []
    kar = (sum(raws) + kar_raw) / (len(raws) + 1)
    peak = max([mm["kar"] for mm in history] + [kar])
    bins = ((1.0 - p) * th.hist_bins).floor().clamp(0, th.hist_bins - 1).long()
    hist = torch.bincount(bins, minlength=th.hist_bins).tolist()

    def mean(x, mask):
        k = int(mask.sum())
        return float(x[mask].sum()) / k if k else None

    return {"epoch": epoch, "n_reports": reports, "n_ignored": ignored, "n_visited": n_vis,
            "ddp_e": ddp_e, "ddp_h": ddp_h, "ddp_m": (1.0 - ddp_e - ddp_h) if n_vis else 0.0,
            "kar_raw": kar_raw, "kar": kar, "kar_peak": peak,
            "period": next_period(period, ddp_e, ddp_h, kar, peak, th), "histogram": hist,
            "mean_loss": float(loss.mean()) if n_vis else None,
            "easy_loss": mean(loss, easy), "moderate_loss": mean(loss, mod), "hard_loss": mean(loss, hard),
            "mean_p_y": float(p.double().mean()) if n_vis else None,
            "forgetting_events": int(t["forgetting"].sum()) - forget0}


def jsonable(v):
    """A NumPy scalar as the Python number it holds (metrics are stored as JSON)."""
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v
