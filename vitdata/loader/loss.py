"""Per-sample losses for the oracle: :func:`per_sample_loss` (any usual criterion evaluated per sample),
:func:`weighted_loss` (the oracle plan's loss weights applied, then the mean), both used by ``Loader.loss``;
:class:`LoaderCriterion`, a trainer's criterion with the loader in its path (``loader.criterion(fn)``); and
the warning given when an epoch ends without any loss reported.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from vitdata.errors import ConfigError, user_stacklevel


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


class LoaderCriterion(torch.nn.Module):
    """``loader.criterion(fn)``: the trainer's criterion ``fn`` with the loader in its path, for trainers that
    compute the loss inside code the user does not edit (timm's ``Task`` calls ``task.criterion(output, target)``;
    DeiT's ``DistillationLoss`` calls its ``base_criterion(outputs, labels)``). Called as ``fn`` is, it takes the
    batch the loader handed over last, evaluates ``fn`` per sample (:func:`per_sample_loss`), reports the
    losses to the oracle, applies the plan's loss weights and returns the mean (``Loader.loss``); whatever the
    trainer adds on top (a distillation term) stays its own. Without an oracle, and on an evaluation loader,
    it is ``fn`` unchanged, so any criterion works there (BCE, JSD). ``fn`` None: cross-entropy."""

    def __init__(self, loader, criterion=None):
        super().__init__()
        self.criterion = criterion
        self._loader = loader        # a plain attribute: not a submodule, not in any state_dict

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loader = self._loader
        if loader.oracle is None or not loader.train:
            fn = self.criterion if self.criterion is not None else F.cross_entropy
            return fn(output, target)
        batch = loader.last_batch
        if batch is None or batch.ids.shape[0] != output.shape[0]:
            have = "no batch" if batch is None else f"a batch of {batch.ids.shape[0]} samples"
            raise ConfigError(f"loader.criterion was called with {output.shape[0]} outputs while the loader's last "
                              f"batch is {have}: the criterion must score the batch the loader handed over last "
                              f"(one call per batch, before the next batch is drawn)", ("criterion",))
        return loader.loss(output, batch, target=target, criterion=self.criterion)


def warn_unreported(epoch: int, oracle) -> None:
    """The warning for an epoch iterated with an oracle that received no per-sample loss."""
    policy = getattr(getattr(oracle, "policy", None), "name", type(oracle).__name__)
    warnings.warn(f"vitdata: epoch {epoch} was iterated with an oracle ({policy}) but no per-sample loss was reported "
                  f"to the loader, so the oracle plans from nothing. Likely cause: the training loss does not go "
                  f"through the loader (timm's train.py: task.criterion = loader_train.criterion(task.criterion); a "
                  f"DeiT-style main.py: criterion = data_loader_train.criterion(criterion); any loop: "
                  f"loader.loss(output, target) or loader.report(ids, losses))", UserWarning,
                  stacklevel=user_stacklevel())
