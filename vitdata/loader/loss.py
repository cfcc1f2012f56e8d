"""Per-sample losses for the oracle: :func:`per_sample_loss` (any usual criterion evaluated per sample) and
:func:`weighted_loss` (the oracle plan's loss weights applied, then the mean). ``Loader.loss`` uses both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vitdata.errors import ConfigError


def per_sample_loss(logits: torch.Tensor, target: torch.Tensor, criterion=None) -> torch.Tensor:
    """Loss per sample, float32 (B,), before any reduction.

    ``target``: (B,) class ids, or (B, C) soft targets (timm's Mixup/CutMix output). ``criterion``:

    - None: cross-entropy (soft-target cross-entropy for 2-D targets);
    - ``torch.nn.CrossEntropyLoss`` (its ``weight``, ``ignore_index`` and ``label_smoothing`` kept),
      timm's ``LabelSmoothingCrossEntropy`` (its ``smoothing``) or ``SoftTargetCrossEntropy``: the same
      loss per sample (these reduce to a mean when called, so they are not called);
    - any other callable ``criterion(logits, target) -> (B,)`` already per sample. One that returns a
      scalar is refused: a mean cannot be split into the per-sample losses the oracle needs.
    """
    b = logits.shape[0]
    logits32 = logits.float()
    if target.dim() == 2:
        kind = type(criterion).__name__
        if criterion is None or kind in ("SoftTargetCrossEntropy", "CrossEntropyLoss", "LabelSmoothingCrossEntropy"):
            return -(target.float() * F.log_softmax(logits32, dim=-1)).sum(-1)
    elif criterion is None:
        return F.cross_entropy(logits32, target, reduction="none")
    if isinstance(criterion, torch.nn.CrossEntropyLoss):
        return F.cross_entropy(logits32, target, weight=criterion.weight, ignore_index=criterion.ignore_index,
                               label_smoothing=criterion.label_smoothing, reduction="none")
    if type(criterion).__name__ == "LabelSmoothingCrossEntropy" and hasattr(criterion, "smoothing"):
        return F.cross_entropy(logits32, target, label_smoothing=float(criterion.smoothing), reduction="none")
    if type(criterion).__name__ == "SoftTargetCrossEntropy":
        raise ConfigError("SoftTargetCrossEntropy needs (B, C) soft targets (timm's Mixup output); got class ids",
                          ("criterion",))
    out = criterion(logits, target)
    if not isinstance(out, torch.Tensor) or out.shape != (b,):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"criterion returned {shape}, not one loss per sample ({b},): pass a criterion with "
                          f"reduction='none', or None / nn.CrossEntropyLoss / timm's LabelSmoothingCrossEntropy or "
                          f"SoftTargetCrossEntropy, which vitdata evaluates per sample itself", ("criterion",))
    return out.float()


def weighted_loss(losses: torch.Tensor, batch) -> torch.Tensor:
    """``mean(losses * batch.loss_weight)`` (the weights of the oracle's plan, e.g. prune-easy's 1 / (1 - r)
    for kept easy samples), or ``mean(losses)`` when the batch has none. Scalar, differentiable."""
    w = getattr(batch, "loss_weight", None)
    return (losses * w).mean() if w is not None else losses.mean()
