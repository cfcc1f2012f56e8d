"""The drop-in training and evaluation loader: ``create_loader(LoaderConfig(...))`` -> :class:`Loader`.

::

    from vitdata import create_loader, LoaderConfig
    loader = create_loader(LoaderConfig(data="/data/imagenet/train", batch_size=256, image_size=224))
    for epoch in range(E):
        loader.set_epoch(epoch)
        for batch in loader:                 # Batch(images (B,3,H,W) on the device, labels, ids, knobs)
            losses = criterion(model(batch.images), batch.labels)     # reduction="none"
            loader.report(batch.ids, losses.detach())
    state = loader.state_dict()              # plain data; loader.load_state_dict(state) resumes exactly

Configuration (:class:`LoaderConfig` and its sections, re-exported here) lives in :mod:`vitdata.loader.config`.
Two backends, behind the one interface of :mod:`vitdata.loader.backends`, yield the same :class:`Batch`
contract from the same :class:`~vitdata.data.sampler.Sampler` and :class:`~vitdata.data.index.SampleIndex`; the
loader never asks which one it drives:

- ``"dali"``: the graphs of ``vitdata.pipelines`` (decode with the random-resized crop fused in,
  resize to the schedule's size, RandAugment with a per-sample magnitude, flip, normalise; when the
  schedule has low-pass steps the train graph stops at uint8 and :meth:`Loader._normalise_uint8`
  crops, normalises and casts in one pass), GPU ops
  on this rank's GPU when the output device is one (:attr:`Loader.dali_device_id`), CPU ops otherwise.
  A parallel external source maps DALI's ``SampleInfo.idx_in_epoch`` to the sampler's id through a
  per-epoch control file.
- ``"torch"``: a ``torch.utils.data.DataLoader`` with Pillow decode and torchvision v2 transforms, the
  baseline and the fallback where DALI cannot be installed. Randomness is seeded per sample from
  (seed, epoch, rank, position), so results do not depend on ``num_workers``.

Epochs. ``set_epoch(e)`` picks the epoch the next iteration runs; it also asks the oracle (when there
is one) for the plan of epoch ``e`` (``oracle.end_epoch(e - 1)``) and hands it to the sampler before any
sample of the epoch is read. Calling ``set_epoch`` with the epoch already in progress keeps its position
(so a resumed loop that calls ``set_epoch`` continues where the state left off). Without ``set_epoch``
each full iteration moves to the next epoch. ``len(loader)`` is the steps of the epoch on this rank.
Before ending epoch ``e - 1`` the loader hands that epoch's skipped ids to ``oracle.mark_skipped`` (when
the oracle has it): a flag, never a loss report, so a bad file is not drawn as an unseen, hardest sample.

End of epoch: training drops the ids that do not fill a global step (``drop_last``); evaluation reads
every id exactly once across ranks and trims padding, so the last batch of a rank may be smaller
(the worked table is in ``vitdata/sampler.py``).

Bad samples (``on_error``): every sample's header is checked before a decoder sees it (format, pixel
budget, readable bytes). ``"skip"`` (training default) delivers the next usable id of the epoch order
in its place and lists (id, path, reason) in :meth:`Loader.skipped`; ``"raise"`` (evaluation default)
raises :class:`~vitdata.errors.DataError` naming file, sample id and reason. That error consumes its
step: iterating the loader again (``for batch in loader`` inside a ``try``) raises the step's next bad
sample (one DataError per bad file), then delivers the step's good samples (without substitutes, so each
good file is evaluated once), then goes on with the next step, so an evaluation loop can log each bad
sample and go on without rebuilding the loader. A file whose header passes but which the decoder refuses
is quarantined (:mod:`vitdata.loader.quarantine`, part of the state) and handled like a header failure, with the
decoder's own words; later epochs skip it before reading.

Resume: :meth:`Loader.state_dict` holds the epoch, the consumed position (never prefetched batches), the
sampler state with its plan, the DALI checkpoint (base64 text) and a config fingerprint; after
:meth:`Loader.load_state_dict` the remaining ids, and on CPU the pixels, equal the uninterrupted run's.
A state taken after ``set_epoch(e + 1)`` but before that epoch's first batch keeps the finished epoch's
DALI checkpoint, so the resumed epoch continues the same augmentation RNG stream.
Reports made to the oracle after the state was taken are not part of it. Where the loader stands is one
value, :class:`ResumePoint` (epoch, position, stage: ready / running / finished).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np
import torch

from vitdata.loader.backends import BackendContext, create_backend
from vitdata.loader.backends.base import make_control
from vitdata.loader.host import intra_op_threads, kernel_threads, resolve_device
from vitdata.loader.config import (DTYPES, ERASE_CELL, IMAGENET_MEAN, IMAGENET_STD, AugmentConfig, EvalConfig, LoaderConfig, OutputConfig, ScheduleConfig, check_config, choose_backend, dist_rank_world, graph_max_ops, resolve_defaults)
from vitdata.errors import ConfigError, DataError, StateError
from vitdata.io import from_json, to_json
from vitdata.loader.compat import TrainerAPI
from vitdata.loader.epoch import ResumePoint, Stage
from vitdata.loader.quarantine import Quarantine
from vitdata.loader.state import check_loader_state

__all__ = ["LoaderConfig", "AugmentConfig", "OutputConfig", "EvalConfig", "ScheduleConfig", "DistributedConfig",
           "Batch", "Loader", "create_loader"]

STATE_FORMAT = 1


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


class Loader(TrainerAPI):
    """Iterates :class:`Batch` es of one split; see the module docstring. Build with :func:`create_loader`."""

    def __init__(self, cfg: LoaderConfig, split: str, oracle=None):
        from vitdata.data.badfiles import BadFiles
        from vitdata.data.index import open_index, split_classes
        from vitdata.data.reader import SampleReader
        from vitdata.data.sampler import Sampler

        check_config(cfg, split)
        backend = choose_backend(cfg)
        cfg = resolve_defaults(cfg, backend)
        self.cfg, self.split, self.oracle = cfg, split, oracle
        self.train = split == "train"
        self.rank, self.world_size = dist_rank_world(cfg)
        self.device = resolve_device(cfg.output.device, self.rank)
        self.batch_size = cfg.batch_size if self.train else (cfg.eval.batch_size or cfg.batch_size)
        self.on_error = cfg.on_error if cfg.on_error != "auto" else ("skip" if self.train else "raise")
        data = cfg.eval.data if (not self.train and cfg.eval.data) else cfg.data
        try:
            # bad_labels="mark": one bad tar label is that sample's bad_label skip (or error), not a dead dataset.
            # An evaluation split is labelled by the training split's class list (a class it lacks is refused).
            self.index = open_index(data, checksums=cfg.verify_checksums, bad_labels="mark", label=cfg.label_member,
                                    classes=split_classes(data, cfg.data, cfg.label_member))
        except DataError as e:
            which = "eval.data" if not self.train and cfg.eval.data else "data"
            raise ConfigError(f"cannot open data source {data!r}: {e}", (which,)) from e
        self.reader = SampleReader(self.index, verify=cfg.verify_checksums, skip_corrupt=cfg.jpeg_warnings == "skip")
        self.sampler = Sampler(len(self.index), self.batch_size, seed=cfg.seed, rank=self.rank,
                               world_size=self.world_size, shuffle=self.train, drop_last=self.train)
        self.schedule = self._make_schedule()
        self._check_knobs()
        self.backend_name = backend
        # ids a decoder refused (vitdata.loader.quarantine); part of the state, and kept beside the index for
        # later runs (vitdata.data.badfiles): this loader starts with the files earlier runs found
        self.quarantine = Quarantine(BadFiles(self.index))
        self.quarantine.load_known()
        # A schedule with low-pass steps: DALI delivers uint8 and _kernels normalises in the crop's pass.
        uint8 = self.train and _uses_lowpass(self.schedule)
        self._backend = create_backend(backend, BackendContext(cfg, split, self.rank, self.batch_size, self.device,
                                                               self.index, self.reader, self.quarantine,
                                                               uint8_images=uint8))
        self._affine = None   # (shift, scale) of the uint8 normalisation, built on first use
        self._point = ResumePoint()
        self._skipped: dict[int, list[dict]] = {}
        self._warned: dict[int, list[dict]] = {}     # delivered with a decoder warning (corrupt_data), by epoch
        self._oracle_ended = None          # (epoch, plan) of the oracle epoch this loader ended last
        self.last_batch: Batch | None = None
        self._pending: list = []   # "raise": the consumed step's DataErrors still to raise, then its batch
        self._closed = False

    @property
    def epoch(self) -> int:
        """The epoch in progress (or the next one to run)."""
        return self._point.epoch

    @property
    def position(self) -> int:
        """Steps of :attr:`epoch` handed over on this rank."""
        return self._point.position

    @property
    def dali_device_id(self) -> int | None:
        """The CUDA device DALI's graph runs on (decoder "mixed", GPU ops); None when DALI runs on the CPU
        or the backend is torch."""
        return self._backend.device_id

    @property
    def graph_spec(self):
        """The :class:`vitdata.pipelines.graphs.GraphSpec` of the DALI graph this loader built (None for the
        torch backend): what a benchmark rebuilds to time the graph's stages alone."""
        return self._backend.spec

    # -- configuration pieces ------------------------------------------------------------------------
    def _make_schedule(self):
        from vitdata.curriculum.schedule import Schedule
        from vitdata.curriculum.named import make_schedule

        sc, a = self.cfg.schedule, self.cfg.augment
        if sc.schedule is not None:
            if not isinstance(sc.schedule, Schedule):
                raise ConfigError("schedule.schedule must be a vitdata.curriculum.schedule.Schedule", ("schedule.schedule",))
            return sc.schedule
        kw = dict(sc.kwargs)
        if a.patch_size:  # every size the model sees must tile into its patches
            kw.setdefault("patch_size", a.patch_size)
        if sc.name == "constant":
            kw.setdefault("randaug_magnitude", a.randaug_magnitude)
            kw.setdefault("randaug_num_ops", a.randaug_num_ops)
        return make_schedule(sc.name, sc.epochs or 1, self.sampler.steps_per_epoch(), self.cfg.image_size, **kw)

    def _check_knobs(self) -> None:
        if not self.train:
            return
        max_ops = graph_max_ops(self.cfg.augment)
        p = self.cfg.augment.patch_size or ERASE_CELL
        for epoch, k in self.schedule.epoch_table():
            if self.cfg.augment.randaug and k.randaug_num_ops > max_ops:
                raise ConfigError(f"the schedule asks for {k.randaug_num_ops} RandAugment ops at epoch {epoch} but the "
                                  f"graph has {max_ops} levels", ("schedule", "augment.randaug_max_ops"))
            size = k.lowpass_size or k.image_size
            if k.erase_ratio > 0 and size % p:
                raise ConfigError(f"PatchErasing at epoch {epoch}: image size {size} (after any low-pass crop) is not "
                                  f"a multiple of augment.patch_size {p}", ("schedule", "augment.patch_size"))

    def knobs(self, epoch: int, step: int):
        """The schedule's knobs of (epoch, step); evaluation uses the eval view (no RandAugment)."""
        if not self.train:
            from vitdata.curriculum.schedule import Knobs

            return Knobs(image_size=self.cfg.eval.image_size or self.cfg.image_size, randaug_magnitude=0.0,
                         randaug_num_ops=0)
        return self.schedule(epoch, step, steps_in_epoch=self.sampler.steps_per_epoch())

    # -- epochs --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Steps of the current (or next) epoch on this rank; the same on every rank."""
        self._ensure_plan()
        return self.sampler.steps_per_epoch()

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` next. The epoch in progress (e.g. a restored one) keeps its position."""
        epoch = int(epoch)
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}", ("epoch",))
        if epoch != self.epoch or self._point.stage is Stage.FINISHED:
            self._point = ResumePoint(epoch)
            self._pending = []
        self._ensure_plan()

    def _ensure_plan(self) -> None:
        if self._point.planned:
            return
        plan = None
        if self.oracle is not None and self.train and self.epoch > 0:
            plan = self._end_oracle_epoch(self.epoch - 1)
        if self.oracle is not None or self.sampler.plan is None:
            self.sampler.set_plan(plan)
        self._point = replace(self._point, planned=True)

    def _end_oracle_epoch(self, epoch: int):
        """The oracle's plan after ``epoch``, ending it once (a collective under torch.distributed, reached
        by every rank at the same point: the end of an epoch's iteration, or ``set_epoch``)."""
        ended = self._oracle_ended
        if ended is not None and ended[0] == epoch:
            return ended[1]
        if isinstance(getattr(self.oracle, "epoch", None), int) and self.oracle.epoch > epoch:
            plan = getattr(self.oracle, "plan", None)   # ended before a saved state was taken
        else:
            mark = getattr(self.oracle, "mark_skipped", None)
            if mark is not None:   # flags, not losses: the oracle gives bad files the floor weight
                mark([d["id"] for d in self._skipped.get(epoch, [])])
            plan = self.oracle.end_epoch(epoch)
        self._oracle_ended = (epoch, plan)
        return plan

    def _control(self) -> dict:
        ids = self.sampler.epoch_ids(self.epoch)
        steps = ids.shape[0]
        knobs = [self.knobs(self.epoch, s) for s in range(steps)]
        plan = self.sampler.plan
        extra = np.zeros(ids.shape, np.float32)
        if plan is not None and plan.aug_magnitude is not None:
            extra = np.where(ids >= 0, plan.aug_magnitude[np.maximum(ids, 0)], 0.0).astype(np.float32)
        return make_control(self.epoch, ids, knobs, extra)

    def _begin(self) -> None:
        if self._point.stage is Stage.FINISHED:   # a full iteration done and no set_epoch: next epoch
            self.set_epoch(self.epoch + 1)
        self._ensure_plan()
        if self._point.stage is Stage.RUNNING:
            return
        self.sampler.set_epoch(self.epoch, self.position)
        control = self._control()
        steps = len(control["ids"]) // self.batch_size
        self._knobs = [self.knobs(self.epoch, s) for s in range(steps)]
        # A state given to load_state_dict is in the backend already (restore): it resumes it here.
        self._backend.start(control, self.epoch, self.position)
        self._point = ResumePoint(self.epoch, self.position, Stage.RUNNING, planned=True)
        self._steps = steps
        self._skipped.setdefault(self.epoch, [])

    def __iter__(self) -> Iterator[Batch]:
        if self._closed:
            raise RuntimeError("loader is closed")
        if self._pending:   # a step with bad samples under "raise": its remaining errors, then its batch
            yield from self._drain()
            if self._point.stage is Stage.FINISHED:
                return
        self._begin()
        while self.position < self._steps:
            step = self.position
            raw = self._backend.next()
            # The backend has handed this step over, so it is consumed even when it holds bad samples:
            # iterating again continues with that step's remaining errors and good samples, then the next
            # step, in step with the backend's queue.
            done = step + 1 == self._steps
            self._point = ResumePoint(self.epoch, step + 1, Stage.FINISHED if done else Stage.RUNNING, planned=True)
            self.sampler.position = self.position
            batch, errors = self._finish(raw, step)
            self.last_batch = batch                      # loader.loss(logits, target) reads it
            self.quarantine.persist()
            if errors:
                self._pending = [*errors, batch]
                yield from self._drain()
            else:
                yield batch
        self._point = replace(self._point, stage=Stage.FINISHED)
        self.quarantine.persist(force=True)
        self.last_batch = None                   # its loss was computed before the trainer asked for more
        if self.train and self.oracle is not None:
            # Every report of the epoch precedes this point (the trainer asked for the batch after the last),
            # so the table is merged here and a state taken between epochs is whole on any one rank.
            self._end_oracle_epoch(self.epoch)

    def _drain(self) -> Iterator[Batch]:
        """Hand over ``_pending``: each DataError is raised (ending this iteration), the batch yielded."""
        while self._pending:
            item = self._pending.pop(0)
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                yield item

    # -- one batch -----------------------------------------------------------------------------------
    def _finish(self, raw, step: int) -> tuple[Batch | None, list[DataError]]:
        """The step's Batch, and under "raise" a DataError per bad sample (the batch then holds the
        step's good samples only, None when there are none: a substitute is not delivered twice)."""
        knobs = self._knobs[step]
        ids_np, orig, status = raw.ids.reshape(-1), raw.orig.reshape(-1), raw.status.reshape(-1)
        errors = self._account(ids_np, orig, status, step)
        images = raw.images
        if raw.layout == "HWC":
            images = images.permute(0, 3, 1, 2)          # NHWC buffer -> channels_last view
        elif self.cfg.output.channels_last and images.dtype != torch.uint8:   # uint8: _kernels writes the layout
            images = images.contiguous(memory_format=torch.channels_last)
        good = ids_np >= 0
        if errors:   # a sample delivered with a decoder warning is no error
            from vitdata.data.checks import WARNING_CODES
            good &= (status == 0) | (np.isin(status, WARNING_CODES) & (ids_np == orig))
        keep = np.flatnonzero(good)
        if not len(keep):
            return None, errors
        n = len(ids_np)
        if len(keep) < n:                                # eval padding (and "raise"'s bad samples): never counted
            sel = slice(0, len(keep)) if np.array_equal(keep, np.arange(len(keep))) else torch.from_numpy(keep)
            images = images[sel] if isinstance(sel, slice) else images.index_select(0, sel.to(images.device))
            ids_np, labels_np = ids_np[keep], raw.labels.reshape(-1)[keep]
        else:
            labels_np = raw.labels.reshape(-1)
        cfg = self.cfg
        with intra_op_threads(images.device, kernel_threads(cfg.num_threads, cfg.num_workers, self.backend_name)):
            images = self._kernels(images, ids_np, knobs, step)
        dtype = DTYPES[self.cfg.output.dtype]
        if images.dtype != dtype:   # the normalised graph's float32 -> bfloat16; uint8 batches leave _kernels cast
            images = images.to(dtype)
        dev = self.device
        plan = self.sampler.plan
        loss_weight = None
        if plan is not None and plan.loss_weight is not None:
            loss_weight = torch.from_numpy(plan.loss_weight[ids_np].astype(np.float32)).to(dev, non_blocking=True)
        mag = np.zeros(len(ids_np), np.float32)
        if self.train and self.cfg.augment.randaug and knobs.randaug_num_ops > 0:
            extra = 0.0 if plan is None or plan.aug_magnitude is None else plan.aug_magnitude[ids_np]
            mag = np.clip(mag + knobs.randaug_magnitude + extra, 0, 10).astype(np.float32)
        return Batch(images=images, labels=torch.from_numpy(labels_np.astype(np.int64)).to(dev, non_blocking=True),
                     ids=torch.from_numpy(ids_np.astype(np.int64)).to(dev, non_blocking=True), knobs=knobs,
                     loss_weight=loss_weight, aug_magnitude=torch.from_numpy(mag)), errors

    def _account(self, ids: np.ndarray, orig: np.ndarray, status: np.ndarray, step: int) -> list[DataError]:
        from vitdata.data.checks import check_sample, code_reason
        from vitdata.errors import WARNINGS

        # Eval padding (orig -1) borrows the order's first id, and reports that id's status; the id itself
        # is checked, raised or counted at its own position, so the padding slot is never an error.
        bad = np.flatnonzero((status != 0) & (orig >= 0))
        errors = []
        for j in bad:
            o = int(orig[j])
            reason = code_reason(int(status[j]))
            path = self.index.describe(o)
            if reason in WARNINGS and int(ids[j]) == o:   # delivered as it is (jpeg_warnings="deliver"): counted
                self._warned.setdefault(self.epoch, []).append({"id": o, "path": path, "reason": reason, "step": step})
                continue
            if self.on_error == "raise":
                q = self.quarantine.get(o)
                if q is not None:   # a decoder refused it: its own words, from the probe or Pillow
                    why = f"the decoder refused it: {q['detail']}"
                else:
                    # The step's status carries only the reason code: on this error path the sample is checked
                    # again here for the checker's own words (the format found, where the file stops, ...).
                    again, why = check_sample(self.reader, self.index, o, self.cfg.max_pixels)[1:]
                    if again != reason:
                        why = f"re-checked here: {again or 'passes now'}" + (f" ({why})" if why else "")
                errors.append(DataError(reason, path, sample_id=o,
                                        detail=f"{why}; {self.split} epoch {self.epoch} step {step} rank {self.rank}"))
                continue
            self._skipped[self.epoch].append({"id": o, "path": path, "reason": reason, "substitute": int(ids[j]),
                                              "step": step})
        return errors

    def _kernels(self, images: torch.Tensor, ids: np.ndarray, knobs, step: int) -> torch.Tensor:
        """The step's low-pass crop and PatchErasing. A uint8 batch (a schedule with low-pass steps) leaves
        normalised, in the output dtype and memory format: see :meth:`_normalise_uint8`."""
        if not self.train:
            return images
        plan = self.sampler.plan
        from vitdata.oracle.policies import boosted_erase_ratio
        erase = boosted_erase_ratio(knobs.erase_ratio, None if plan is None else plan.erase_ratio, ids)
        crop = knobs.lowpass_size is not None and knobs.lowpass_size < images.shape[-1]
        if images.dtype == torch.uint8:
            images = self._normalise_uint8(images, knobs.lowpass_size if crop else None)
        elif crop:
            from vitdata import kernels

            images = kernels.lowpass_crop(images, knobs.lowpass_size)
        if (erase > 0).any():
            from vitdata import kernels

            p = self.cfg.augment.patch_size or ERASE_CELL
            grid = (images.shape[-2] // p, images.shape[-1] // p)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
                [self.cfg.seed, self.epoch, step, self.rank, 0xE4A5]).generate_state(1)[0]))
            params = kernels.sample_patch_erase_params(images.shape[0], grid, torch.from_numpy(erase), gen,
                                                       device=images.device)
            # 0 in normalised units is the dataset mean; the batch is a fresh tensor, so erase in place.
            images = kernels.patch_erase(images, params, p, "zero", inplace=True)
        return images

    def _normalise_uint8(self, images: torch.Tensor, lowpass_size: int | None) -> torch.Tensor:
        """A uint8 (B, 3, H, W) batch on the 0..255 scale -> normalised, output dtype and memory format.

        Low-pass step: ``kernels.lowpass_crop`` reads the uint8 batch once and writes the cropped,
        normalised batch in the output dtype and layout (one pass; the Triton kernel on CUDA). Other steps
        (e.g. EfficientTrain's late full-size epochs): one ``torch.addcmul(-mean/std, x, 1/std, out=y)``,
        a single elementwise pass that reads uint8, computes in float32 and stores straight into ``y``
        of the output dtype and memory format (the kernel module has no normalise-only path, and the crop
        at full size would spend two GEMMs on an identity)."""
        from vitdata import kernels

        o = self.cfg.output
        dtype = DTYPES[o.dtype]
        fmt = torch.channels_last if o.channels_last else torch.contiguous_format
        if lowpass_size is not None:
            return kernels.lowpass_crop(images, lowpass_size, mean=[255.0 * m for m in o.mean],
                                        std=[255.0 * s for s in o.std], out_dtype=dtype, memory_format=fmt)
        if self._affine is None or self._affine[0].device != images.device:
            std = torch.tensor([255.0 * s for s in o.std], dtype=torch.float64)
            scale = (1.0 / std).view(1, -1, 1, 1)
            shift = -torch.tensor([255.0 * m for m in o.mean], dtype=torch.float64).view(1, -1, 1, 1) * scale
            self._affine = (shift.to(images.device, torch.float32), scale.to(images.device, torch.float32))
        out = torch.empty(images.shape, dtype=dtype, device=images.device, memory_format=fmt)
        return torch.addcmul(self._affine[0], images, self._affine[1], out=out)

    # -- oracle, skips -------------------------------------------------------------------------------
    def report(self, ids: torch.Tensor, losses: torch.Tensor, **kw) -> None:
        """Forward per-sample losses to the oracle (no host sync here); a no-op without an oracle."""
        if self.oracle is not None:
            self.oracle.report(ids, losses, **kw)

    def warned(self, epoch: int | None = None) -> list[dict]:
        """Samples delivered in ``epoch`` (default: current) although libjpeg decodes them with a "Corrupt JPEG
        data" warning (reason ``corrupt_data``, :mod:`vitdata.data.jpegwalk`): dicts id, path, reason, step.
        ``LoaderConfig(jpeg_warnings="skip")`` substitutes them instead (then they are in :meth:`skipped`)."""
        return list(self._warned.get(self.epoch if epoch is None else epoch, []))

    def skipped(self, epoch: int | None = None) -> list[dict]:
        """Samples skipped in ``epoch`` (default: current): dicts id, path, reason, substitute, step."""
        return list(self._skipped.get(self.epoch if epoch is None else epoch, []))

    # -- state ---------------------------------------------------------------------------------------
    def _fingerprint(self) -> dict:
        return {"index": self.index.fingerprint, "batch_size": self.batch_size, "seed": self.cfg.seed,
                "world_size": self.world_size, "rank": self.rank, "split": self.split, "backend": self.backend_name,
                "schedule": self.schedule.to_dict() if self.train else None}

    def state_dict(self) -> dict:
        """Plain data (no pickle needed): format, fingerprint, epoch, position (consumed steps), sampler
        state (with the plan's arrays), backend state (DALI checkpoint as base64 text), skip report, and
        the oracle's state when there is one. JSON types throughout (arrays as base64 text, see
        :mod:`vitdata.io`): ``json.dumps`` takes it as it is. Rank-local, no communication: any one
        rank's state resumes every rank (a rank-0-only checkpoint; other ranks restart their augmentation
        draws at the saved step). Between epochs it is exact on every rank, oracle included (the loader
        ends the oracle's epoch as the last batch is consumed); mid-epoch, the oracle reports pending on
        other ranks are lost, and reports made after this call are not in it."""
        oracle = self.oracle.state_dict() if self.oracle is not None and hasattr(self.oracle, "state_dict") else None
        self.quarantine.persist(force=True)
        point = self._point
        if point.loaded is not None:
            return to_json(dict(point.loaded, oracle=oracle))
        sampler = self.sampler.state_dict()
        sampler["epoch"], sampler["position"] = self.epoch, self.position
        # The backend's state also when the epoch has not started: after set_epoch(e + 1) it holds the
        # finished epoch's pipeline, which a resume moves on from as the uninterrupted run does (the same
        # augmentation RNG stream).
        return to_json({"format": STATE_FORMAT, "fingerprint": self._fingerprint(), "epoch": self.epoch,
                        "position": self.position, "finished": point.stage is Stage.FINISHED,
                        "started": point.stage is not Stage.READY, "sampler": sampler,
                        "backend": self._backend.state(),
                        "skipped": [dict(d, epoch=e) for e, lst in self._skipped.items() for d in lst],
                        "quarantine": self.quarantine.state(), "oracle": oracle})

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`. Refuses (StateError naming the field) a state from another
        dataset index, batch size, seed, rank, split, backend or schedule, or of a newer format.

        World-size change (elastic resume): a state saved with W ranks x batch B loads into W' ranks x
        batch B' when W' * B' == W * B. Each remaining global step then holds the same set of ids as the
        uninterrupted run (augmentation draws restart from the step, they are not replayed); the skip
        report of the saved rank is not carried over. Any other global batch is refused, naming
        ``global_batch_size`` and ``world_size``.
        """
        if not isinstance(state, dict) or "format" not in state:
            raise StateError("not a vitdata loader state (no 'format' field)")
        state = from_json(state)
        if not isinstance(state["format"], int) or state["format"] < 1:
            raise StateError(f"loader state has no valid format version (field format: {state['format']!r})")
        if state["format"] > STATE_FORMAT:
            raise StateError(f"loader state written by a newer vitdata (format {state['format']}; this one reads "
                             f"{STATE_FORMAT})")
        mine, theirs = self._fingerprint(), state.get("fingerprint", {})
        if not isinstance(theirs, dict):
            raise StateError("loader state has no fingerprint (field fingerprint)")
        # Another rank's state (a checkpoint saved on rank 0 only) resumes like a world-size change: at
        # the same global step, with this rank's own fresh augmentation draws.
        elastic = theirs.get("world_size") != mine["world_size"] or theirs.get("rank") != mine["rank"]
        if elastic:
            saved_g = int(theirs.get("world_size") or 0) * int(theirs.get("batch_size") or 0)
            new_g = self.world_size * self.batch_size
            if saved_g != new_g:
                raise StateError(f"loader state was saved with global batch {saved_g} (world_size "
                                 f"{theirs.get('world_size')} x batch_size {theirs.get('batch_size')}); this loader "
                                 f"has global batch {new_g} (world_size {self.world_size} x batch_size "
                                 f"{self.batch_size}). A world-size change must keep the global batch size: "
                                 + (f"use batch_size={saved_g // self.world_size}" if saved_g % self.world_size == 0
                                    else f"{saved_g} is not divisible by world_size {self.world_size}")
                                 + " [fields: global_batch_size, world_size]")
        for key in mine:
            if elastic and key in ("world_size", "rank", "batch_size"):
                continue
            if theirs.get(key) != mine[key]:
                raise StateError(f"loader state does not match this loader: field {key!r} "
                                 f"(state: {str(theirs.get(key))[:80]}, loader: {str(mine[key])[:80]})")
        try:
            self.sampler.load_state_dict(state["sampler"])
        except ConfigError as e:
            raise StateError(f"loader state does not match this loader's sampler: {e}") from e
        check_loader_state(state, steps_per_epoch=self.sampler.steps_per_epoch(), batch_size=self.batch_size,
                           elastic=elastic)
        self.quarantine.load(state.get("quarantine"), len(self.index))
        if self.oracle is not None and state.get("oracle") is not None:
            self.oracle.load_state_dict(state["oracle"])
        self._oracle_ended = None
        epoch, position = int(state["epoch"]), int(state["position"])
        self._skipped, self._pending = {}, []
        if not elastic:
            for d in state.get("skipped", []):
                d = dict(d)
                self._skipped.setdefault(int(d.pop("epoch")), []).append(d)
        finished = bool(state.get("finished"))
        started = bool(state.get("started")) or finished
        backend_state = state.get("backend") or {}
        # The backend drops what it runs and resumes this state at the next start (mid-epoch: the same
        # batches, bit-exact; at an epoch's end: it moves on to the next epoch from there). A state from
        # another world size has nothing to resume in it: that start begins afresh at the position.
        self._backend.restore(backend_state if not elastic and (started or backend_state) else None)
        if not elastic and not started and position:
            raise StateError("loader state is mid-epoch but holds no backend state (field backend)")
        # A state from another world size resumes at its position with fresh augmentation draws; a
        # finished epoch moves on to the next one afresh.
        if finished:
            self._point = ResumePoint(epoch, position, Stage.FINISHED, planned=True)
        else:
            self._point = ResumePoint(epoch, position, Stage.READY, planned=True, loaded=state if started else None)

    def close(self) -> None:
        """Stop workers and remove temporary files. Idempotent."""
        if not self._closed:
            self._closed = True
            self._backend.close()
            self.quarantine.persist(force=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"Loader(split={self.split!r}, backend={self.backend_name!r}, samples={len(self.index)}, "
                f"batch_size={self.batch_size}, rank={self.rank}/{self.world_size}, epoch={self.epoch}, "
                f"position={self.position})")


def _uses_lowpass(schedule) -> bool:
    """Whether any step of ``schedule`` asks for the low-pass crop (decided once, when the loader is built)."""
    if any(k.lowpass_size is not None for _, k in schedule.epoch_table()):
        return True
    rule = schedule.rules.get("lowpass_size") if isinstance(getattr(schedule, "rules", None), dict) else None
    if rule is not None and rule.varies_within_epoch():
        return any(schedule(e, s).lowpass_size is not None
                   for e in range(schedule.epochs) for s in range(schedule.steps_per_epoch))
    return False


def create_loader(cfg: LoaderConfig, split: str = "train", oracle=None) -> Loader:
    """Check ``cfg`` (ConfigError naming the fields) and build the loader of ``split`` ("train" | "eval").

    ``oracle``: a :class:`vitdata.oracle.difficulty.DifficultyOracle` (or anything with ``report`` and ``end_epoch``)
    that plans each training epoch from the reported losses, or a policy name ("data-centric",
    "prune-easy", "weighted", "uniform"): a DifficultyOracle sized from the index, seeded with ``cfg.seed``.
    An oracle whose ``num_samples`` differs from the index is refused here (ConfigError).
    """
    from vitdata.oracle.difficulty import make_oracle

    if not isinstance(cfg, LoaderConfig):
        raise ConfigError(f"cfg must be a LoaderConfig, got {type(cfg).__name__}", ("cfg",))
    loader = Loader(cfg, split, None)
    try:
        loader.oracle = make_oracle(oracle, len(loader.index), seed=cfg.seed, device=loader.device,
                                    epochs=cfg.schedule.epochs, source=f"the data source {loader.index.spec!r}")
    except BaseException:
        loader.close()
        raise
    return loader
