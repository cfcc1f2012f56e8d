"""One step's :class:`Batch`, assembled from what a backend delivers (:class:`~vitdata.loader.backends.base.RawBatch`).

:class:`BatchAssembler` accounts for the step's bad samples (a skip record per substituted sample, or under
``on_error="raise"`` a :class:`~vitdata.errors.DataError` each, the batch then holding the good samples
only), drops evaluation padding, runs the step's kernels (low-pass crop, PatchErasing, and the
normalisation of a uint8 batch in the crop's pass) and attaches the plan's loss weights and the
RandAugment magnitude each sample got. A sample the decoder reads with a warning (``corrupt_data``) and
that was delivered as it is is no error: it is recorded as warned. It holds no epoch state: the loader
gives it the step, its knobs and the plan.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vitdata.errors import DataError
from vitdata.loader.config import DTYPES, ERASE_CELL
from vitdata.loader.host import intra_op_threads


@dataclass
class Batch:
    """One step's batch. ``images`` (B, 3, H, W) on the output device in the output dtype and memory
    format, normalised; ``labels`` and ``ids`` (B,) int64 on the same device; ``knobs`` the schedule's
    Knobs of this step. ``loss_weight`` (B,) float32 from the oracle's plan, or None; ``aug_magnitude``
    (B,) float32 on CPU, the RandAugment magnitude each sample got (schedule + plan, 0 when off)."""
    images: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor
    knobs: Any = None
    loss_weight: torch.Tensor | None = None
    aug_magnitude: torch.Tensor | None = None

    def __iter__(self):
        """``images, labels = batch`` (a DataLoader's pair); ids, knobs and weights stay attributes."""
        return iter((self.images, self.labels))


@dataclass
class Assembled:
    """What :meth:`BatchAssembler.finish` makes of one step: the Batch (None when no good sample is left),
    the DataErrors of its bad samples under "raise", and its records: ``skipped`` (id, path, reason,
    substitute, step) and ``warned`` (id, path, reason, step; delivered despite a decoder warning)."""
    batch: Batch | None
    errors: list[DataError]
    skipped: list[dict]
    warned: list[dict]


@dataclass(frozen=True)
class Step:
    """Which step a raw batch is: its epoch and step number on this rank, the schedule's knobs of it, and
    the epoch's plan (an :class:`~vitdata.data.sampler.EpochPlan`, or None)."""
    epoch: int
    step: int
    knobs: Any
    plan: Any = None


class BatchAssembler:
    """Raw batches -> :class:`Batch` es for one loader (its config, split, rank, device, data and quarantine)."""

    def __init__(self, cfg, split: str, rank: int, device: torch.device, index, reader, quarantine, on_error: str,
                 kernel_threads: int = 1):
        self.cfg, self.split, self.rank, self.device = cfg, split, rank, device
        self.kernel_threads = kernel_threads   # intra-op threads of the CPU kernels (host.kernel_threads)
        self.train = split == "train"
        self.index, self.reader, self.quarantine, self.on_error = index, reader, quarantine, on_error
        self._affine = None   # (shift, scale) of the uint8 normalisation, built on first use

    def finish(self, raw, step: Step) -> Assembled:
        """The step's Batch, the DataErrors of its bad samples under "raise" (the batch then holds the
        step's good samples only, None when there are none: a substitute is not delivered twice), and
        the records of the samples substituted under "skip" or delivered with a decoder warning."""
        ids_np, orig, status = raw.ids.reshape(-1), raw.orig.reshape(-1), raw.status.reshape(-1)
        out = self._account(ids_np, orig, status, step)
        images = raw.images
        if raw.layout == "HWC":
            images = images.permute(0, 3, 1, 2)          # NHWC buffer -> channels_last view
        elif self.cfg.output.channels_last and images.dtype != torch.uint8:   # uint8: _kernels writes the layout
            images = images.contiguous(memory_format=torch.channels_last)
        good = ids_np >= 0
        if out.errors:   # a sample delivered with a decoder warning is no error
            from vitdata.data.checks import WARNING_CODES
            good &= (status == 0) | (np.isin(status, WARNING_CODES) & (ids_np == orig))
        keep = np.flatnonzero(good)
        if not len(keep):
            return out
        n = len(ids_np)
        if len(keep) < n:                                # eval padding (and "raise"'s bad samples): never counted
            sel = slice(0, len(keep)) if np.array_equal(keep, np.arange(len(keep))) else torch.from_numpy(keep)
            images = images[sel] if isinstance(sel, slice) else images.index_select(0, sel.to(images.device))
            ids_np, labels_np = ids_np[keep], raw.labels.reshape(-1)[keep]
        else:
            labels_np = raw.labels.reshape(-1)
        with intra_op_threads(images.device, self.kernel_threads):
            images = self._kernels(images, ids_np, step)
        dtype = DTYPES[self.cfg.output.dtype]
        if images.dtype != dtype:   # the normalised graph's float32 -> bfloat16; uint8 batches leave _kernels cast
            images = images.to(dtype)
        out.batch = self._batch(images, ids_np, labels_np, step)
        return out

    def _batch(self, images: torch.Tensor, ids_np: np.ndarray, labels_np: np.ndarray, step: Step) -> Batch:
        dev, plan, knobs = self.device, step.plan, step.knobs
        loss_weight = None
        if plan is not None and plan.loss_weight is not None:
            loss_weight = torch.from_numpy(plan.loss_weight[ids_np].astype(np.float32)).to(dev, non_blocking=True)
        mag = np.zeros(len(ids_np), np.float32)
        if self.train and self.cfg.augment.randaug and knobs.randaug_num_ops > 0:
            extra = 0.0 if plan is None or plan.aug_magnitude is None else plan.aug_magnitude[ids_np]
            mag = np.clip(mag + knobs.randaug_magnitude + extra, 0, 10).astype(np.float32)
        return Batch(images=images, labels=torch.from_numpy(labels_np.astype(np.int64)).to(dev, non_blocking=True),
                     ids=torch.from_numpy(ids_np.astype(np.int64)).to(dev, non_blocking=True), knobs=knobs,
                     loss_weight=loss_weight, aug_magnitude=torch.from_numpy(mag))

    def _account(self, ids: np.ndarray, orig: np.ndarray, status: np.ndarray, step: Step) -> Assembled:
        from vitdata.data.checks import code_reason
        from vitdata.errors import WARNINGS

        # Eval padding (orig -1) borrows the order's first id, and reports that id's status; the id itself
        # is checked, raised or counted at its own position, so the padding slot is never an error.
        bad = np.flatnonzero((status != 0) & (orig >= 0))
        out = Assembled(None, [], [], [])
        for j in bad:
            o = int(orig[j])
            reason = code_reason(int(status[j]))
            path = self.index.describe(o)
            if reason in WARNINGS and int(ids[j]) == o:   # delivered as it is (jpeg_warnings="deliver"): counted
                out.warned.append({"id": o, "path": path, "reason": reason, "step": step.step})
            elif self.on_error == "raise":
                out.errors.append(DataError(reason, path, sample_id=o,
                                            detail=f"{self._why(o, reason)}; {self.split} epoch {step.epoch} step "
                                                   f"{step.step} rank {self.rank}"))
            else:
                out.skipped.append({"id": o, "path": path, "reason": reason, "substitute": int(ids[j]),
                                    "step": step.step})
        return out

    def _why(self, sample_id: int, reason: str) -> str:
        """The words of a "raise" error: the decoder's for a quarantined id, else the checker's."""
        from vitdata.data.checks import check_sample

        q = self.quarantine.get(sample_id)
        if q is not None:   # a decoder refused it: its own words, from the probe or Pillow
            return f"the decoder refused it: {q['detail']}"
        # The step's status carries only the reason code: on this error path the sample is checked
        # again here for the checker's own words (the format found, where the file stops, ...).
        again, why = check_sample(self.reader, self.index, sample_id, self.cfg.max_pixels)[1:]
        if again != reason:
            why = f"re-checked here: {again or 'passes now'}" + (f" ({why})" if why else "")
        return why

    def _kernels(self, images: torch.Tensor, ids: np.ndarray, step: Step) -> torch.Tensor:
        """The step's low-pass crop (or Lanczos resize, ``knobs.lowpass_filter``) and PatchErasing. A uint8
        batch (a schedule with low-pass steps) leaves normalised, in the output dtype and memory format: see
        :meth:`_normalise_uint8`."""
        if not self.train:
            return images
        from vitdata.oracle.policies import boosted_erase_ratio

        knobs, plan = step.knobs, step.plan
        erase = boosted_erase_ratio(knobs.erase_ratio, None if plan is None else plan.erase_ratio, ids)
        crop = knobs.lowpass_size is not None and knobs.lowpass_size < images.shape[-1]
        if images.dtype == torch.uint8:
            images = self._normalise_uint8(images, knobs.lowpass_size if crop else None, knobs.lowpass_filter)
        elif crop:
            from vitdata import kernels

            images = kernels.shrink_op(knobs.lowpass_filter)(images, knobs.lowpass_size)
        if (erase > 0).any():
            from vitdata import kernels

            p = self.cfg.augment.patch_size or ERASE_CELL
            grid = (images.shape[-2] // p, images.shape[-1] // p)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
                [self.cfg.seed, step.epoch, step.step, self.rank, 0xE4A5]).generate_state(1)[0]))
            params = kernels.sample_patch_erase_params(images.shape[0], grid, torch.from_numpy(erase), gen,
                                                       device=images.device)
            # 0 in normalised units is the dataset mean; the batch is a fresh tensor, so erase in place.
            images = kernels.patch_erase(images, params, p, "zero", inplace=True)
        return images

    def _normalise_uint8(self, images: torch.Tensor, lowpass_size: int | None, lowpass_filter: str) -> torch.Tensor:
        """A uint8 (B, 3, H, W) batch on the 0..255 scale -> normalised, output dtype and memory format.

        Low-pass step: ``kernels.lowpass_crop`` (``kernels.lanczos_resize`` for ``lowpass_filter``
        "lanczos") reads the uint8 batch once and writes the cropped, normalised batch in the output dtype
        and layout (one pass; the Triton kernel on CUDA). Other steps
        (e.g. EfficientTrain's late full-size epochs): one ``torch.addcmul(-mean/std, x, 1/std, out=y)``,
        a single elementwise pass that reads uint8, computes in float32 and stores straight into ``y``
        of the output dtype and memory format (the kernel module has no normalise-only path, and the crop
        at full size would spend two GEMMs on an identity)."""
        from vitdata import kernels

        o = self.cfg.output
        dtype = DTYPES[o.dtype]
        fmt = torch.channels_last if o.channels_last else torch.contiguous_format
        if lowpass_size is not None:
            return kernels.shrink_op(lowpass_filter)(images, lowpass_size, mean=[255.0 * m for m in o.mean],
                                                     std=[255.0 * s for s in o.std], out_dtype=dtype,
                                                     memory_format=fmt)
        if self._affine is None or self._affine[0].device != images.device:
            std = torch.tensor([255.0 * s for s in o.std], dtype=torch.float64)
            scale = (1.0 / std).view(1, -1, 1, 1)
            shift = -torch.tensor([255.0 * m for m in o.mean], dtype=torch.float64).view(1, -1, 1, 1) * scale
            self._affine = (shift.to(images.device, torch.float32), scale.to(images.device, torch.float32))
        out = torch.empty(images.shape, dtype=dtype, device=images.device, memory_format=fmt)
        return torch.addcmul(self._affine[0], images, self._affine[1], out=out)

