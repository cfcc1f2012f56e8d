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
  schedule has low-pass steps the train graph stops at uint8 and the batch assembly
  (:mod:`vitdata.loader.batch`) crops, normalises and casts in one pass), GPU ops
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
(the worked table is in ``vitdata/data/sampler.py``).

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
sampler's plan, the DALI checkpoint (base64 text) and a config fingerprint (:mod:`vitdata.loader.state`); after
:meth:`Loader.load_state_dict` the remaining ids, and on CPU the pixels, equal the uninterrupted run's.
A state taken after ``set_epoch(e + 1)`` but before that epoch's first batch keeps the finished epoch's
DALI checkpoint, so the resumed epoch continues the same augmentation RNG stream.
Reports made to the oracle after the state was taken are not part of it. Where the loader stands, and
what the epoch's iteration carries between batches, is one object, the epoch's
:class:`~vitdata.loader.epoch.EpochRun` (epoch, position, stage: ready / running / finished); the loader
itself holds configuration.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from vitdata.errors import ConfigError, DataError, StateError
from vitdata.io import to_json
from vitdata.loader.backends import BackendContext, create_backend
from vitdata.loader.backends.base import make_control
from vitdata.loader.batch import Batch, BatchAssembler, Step
from vitdata.loader.compat import TrainerAPI
from vitdata.loader.config import (ERASE_CELL, AugmentConfig, DistributedConfig, EvalConfig, LoaderConfig,
                                   OutputConfig, ScheduleConfig, check_config, choose_backend, dist_rank_world,
                                   graph_max_ops, resolve_defaults)
from vitdata.loader.epoch import EpochRun, Stage
from vitdata.loader.host import kernel_threads, resolve_device
from vitdata.loader.levels import open_store
from vitdata.loader.loss import warn_unreported
from vitdata.loader.quarantine import Quarantine
from vitdata.loader.state import STATE_FORMAT, check_point, current_format, match_fingerprint, read_state

__all__ = ["LoaderConfig", "AugmentConfig", "OutputConfig", "EvalConfig", "ScheduleConfig", "DistributedConfig",
           "Batch", "Loader", "create_loader"]


class Loader(TrainerAPI):
    """Iterates :class:`Batch` es of one split; see the module docstring. Build with :func:`create_loader`.

    The loader holds configuration (config, index, sampler, schedule, backend, batch assembly), the skip
    report and the quarantine across epochs; the epoch in progress is :attr:`_run`."""

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
        self.reader = SampleReader(self.index, verify=cfg.verify_checksums, skip_corrupt=cfg.jpeg_warnings == "skip",
                                   check_png_data=cfg.check_png_data)
        self._sampler = Sampler(len(self.index), self.batch_size, seed=cfg.seed, rank=self.rank,
                                world_size=self.world_size, shuffle=self.train, drop_last=self.train)
        self.schedule = self._make_schedule()
        self._check_knobs()
        self.backend_name = backend
        # ids a decoder refused (vitdata.loader.quarantine); part of the state, and kept beside the index for
        # later runs (vitdata.data.badfiles): this loader starts with the files earlier runs found
        self.quarantine = Quarantine(BadFiles(self.index))
        self.quarantine.load_known()
        # A schedule with low-pass steps: DALI delivers uint8 and the assembly normalises in the crop's pass.
        uint8 = self.train and _uses_lowpass(self.schedule)
        self._backend = create_backend(backend, BackendContext(cfg, split, self.rank, self.batch_size, self.device,
                                                               self.index, self.reader, self.quarantine,
                                                               uint8_images=uint8,
                                                               levels=open_store(cfg, self.index) if self.train else None))
        self._assembler = BatchAssembler(cfg, split, self.rank, self.device, self.index, self.reader,
                                         self.quarantine, self.on_error,
                                         kernel_threads(cfg.num_threads, cfg.num_workers, backend))
        self._run = EpochRun()
        self._skipped: dict[int, list[dict]] = {}   # epoch -> skip records (the skip report, part of the state)
        self._warned: dict[int, list[dict]] = {}    # delivered with a decoder warning (corrupt_data), by epoch
        self._oracle_ended = None          # (epoch, plan) of the oracle epoch this loader ended last
        self.last_batch: Batch | None = None
        self._reported, self._warned_unreported = None, False   # epoch of the last report; warned once
        self._closed = False

    @property
    def epoch(self) -> int:
        """The epoch in progress (or the next one to run)."""
        return self._run.epoch

    @property
    def position(self) -> int:
        """Steps of :attr:`epoch` handed over on this rank."""
        return self._run.position

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
        return make_schedule(sc.name, sc.epochs or 1, self._sampler.steps_per_epoch(), self.cfg.image_size, **kw)

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
        return self.schedule(epoch, step, steps_in_epoch=self._sampler.steps_per_epoch())

    # -- epochs --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Steps of the current (or next) epoch on this rank; the same on every rank."""
        self._ensure_plan()
        return self._sampler.steps_per_epoch()

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` next. The epoch in progress (e.g. a restored one) keeps its position."""
        epoch = int(epoch)
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}", ("epoch",))
        if epoch != self.epoch or self._run.stage is Stage.FINISHED:
            self._run = EpochRun(epoch)
        self._ensure_plan()

    def _ensure_plan(self) -> None:
        run = self._run
        if run.planned:
            return
        plan = None
        if self.oracle is not None and self.train and run.epoch > 0:
            plan = self._end_oracle_epoch(run.epoch - 1)
        if self.oracle is not None or self._sampler.plan is None:
            self._sampler.set_plan(plan)
        run.planned = True

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

    def _begin(self) -> EpochRun:
        """The epoch run to iterate, its backend started (the next epoch after a finished one)."""
        if self._run.stage is Stage.FINISHED:   # a full iteration done and no set_epoch: next epoch
            self.set_epoch(self.epoch + 1)
        self._ensure_plan()
        run = self._run
        if run.stage is Stage.RUNNING:
            return run
        self._sampler.set_epoch(run.epoch, run.position)
        ids = self._sampler.epoch_ids(run.epoch)
        knobs = [self.knobs(run.epoch, s) for s in range(ids.shape[0])]
        plan = self._sampler.plan
        extra = np.zeros(ids.shape, np.float32)
        if plan is not None and plan.aug_magnitude is not None:
            extra = np.where(ids >= 0, plan.aug_magnitude[np.maximum(ids, 0)], 0.0).astype(np.float32)
        # A state given to load_state_dict is in the backend already (restore): it resumes it here.
        self._backend.start(make_control(run.epoch, ids, knobs, extra), run.epoch, run.position)
        run.started(knobs)
        self._skipped.setdefault(run.epoch, [])
        return run

    def __iter__(self) -> Iterator[Batch]:
        if self._closed:
            raise RuntimeError("loader is closed")
        if self._run.pending:   # a step with bad samples under "raise": its remaining errors, then its batch
            yield from self._run.drain()
            if self._run.stage is Stage.FINISHED:
                return
        run = self._begin()
        while run.position < run.steps:
            step = run.position
            raw = self._backend.next()
            run.handed_over(step)
            self._sampler.position = run.position
            out = self._assembler.finish(raw, Step(run.epoch, step, run.knobs[step], self._sampler.plan))
            self._skipped[run.epoch].extend(out.skipped)
            if out.warned:
                self._warned.setdefault(run.epoch, []).extend(out.warned)
            batch, errors = out.batch, out.errors
            self.last_batch = batch                      # loader.loss(logits, target) reads it
            self.quarantine.persist()
            if errors:
                run.pending = [*errors, batch]
                yield from run.drain()
            else:
                yield batch
        run.stage = Stage.FINISHED
        self.quarantine.persist(force=True)
        self.last_batch = None                   # its loss was computed before the trainer asked for more
        if self.train and self.oracle is not None:
            self._check_reported()
            # Every report of the epoch precedes this point (the trainer asked for the batch after the last),
            # so the table is merged here and a state taken between epochs is whole on any one rank.
            self._end_oracle_epoch(run.epoch)

    # -- oracle, skips -------------------------------------------------------------------------------
    def report(self, ids, losses, **kw) -> None:
        """Forward per-sample losses to the oracle (no host sync here); a no-op without an oracle."""
        if self.oracle is not None:
            self._reported = self.epoch
            self.oracle.report(ids, losses, **kw)

    def warned(self, epoch: int | None = None) -> list[dict]:
        """Samples delivered in ``epoch`` (default: current) although libjpeg decodes them with a "Corrupt JPEG
        data" warning (reason ``corrupt_data``, :mod:`vitdata.data.jpegwalk`): dicts id, path, reason, step.
        ``LoaderConfig(jpeg_warnings="skip")`` substitutes them instead (then they are in :meth:`skipped`)."""
        return list(self._warned.get(self.epoch if epoch is None else epoch, []))

    def _check_reported(self) -> None:
        """Warn once when a whole epoch was iterated with an oracle and no loss reached it through :meth:`report`
        (or :meth:`loss`): the oracle would plan the next epoch from nothing, silently."""
        if not self._warned_unreported and self._reported != self.epoch:
            self._warned_unreported = True
            warn_unreported(self.epoch, self.oracle)

    def skipped(self, epoch: int | None = None) -> list[dict]:
        """Samples skipped in ``epoch`` (default: current): dicts id, path, reason, substitute, step."""
        return list(self._skipped.get(self.epoch if epoch is None else epoch, []))

    # -- state ---------------------------------------------------------------------------------------
    def _fingerprint(self) -> dict:
        return {"index": self.index.fingerprint, "batch_size": self.batch_size, "seed": self.cfg.seed,
                "world_size": self.world_size, "rank": self.rank, "split": self.split, "backend": self.backend_name,
                "schedule": self.schedule.to_dict() if self.train else None}

    def state_dict(self) -> dict:
        """Plain data (no pickle needed), laid out in :mod:`vitdata.loader.state`: format, fingerprint, epoch,
        position (consumed steps), the sampler's plan, backend state (DALI checkpoint as base64 text), skip
        report, quarantine, and the oracle's state when there is one. JSON types throughout (arrays as
        base64 text, see :mod:`vitdata.io`): ``json.dumps`` takes it as it is. Rank-local, no
        communication: any one rank's state resumes every rank (a rank-0-only checkpoint; other ranks
        restart their augmentation draws at the saved step). Between epochs it is exact on every rank,
        oracle included (the loader ends the oracle's epoch as the last batch is consumed); mid-epoch, the
        oracle reports pending on other ranks are lost, and reports made after this call are not in it."""
        oracle = self.oracle.state_dict() if self.oracle is not None and hasattr(self.oracle, "state_dict") else None
        self.quarantine.persist(force=True)
        run = self._run
        if run.loaded is not None:
            return to_json(dict(run.loaded, oracle=oracle))
        sampler = {k: v for k, v in self._sampler.state_dict().items() if k not in ("epoch", "position")}
        # The backend's state also when the epoch has not started: after set_epoch(e + 1) it holds the
        # finished epoch's pipeline, which a resume moves on from as the uninterrupted run does (the same
        # augmentation RNG stream).
        return to_json({"format": STATE_FORMAT, "fingerprint": self._fingerprint(), "epoch": run.epoch,
                        "position": run.position, "sampler": sampler, "backend": self._backend.state(),
                        "skipped": [dict(d, epoch=e) for e, lst in self._skipped.items() for d in lst],
                        "quarantine": self.quarantine.state(), "oracle": oracle})

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` (or a state of format 1). Refuses (StateError naming the field) a
        state from another dataset index, batch size, seed, rank, split, backend or schedule, of a newer
        format, or whose fields disagree (:mod:`vitdata.loader.state`).

        World-size change (elastic resume): a state saved with W ranks x batch B loads into W' ranks x
        batch B' when W' * B' == W * B. Each remaining global step then holds the same set of ids as the
        uninterrupted run (augmentation draws restart from the step, they are not replayed); the skip
        report of the saved rank is not carried over. Any other global batch is refused, naming
        ``global_batch_size`` and ``world_size``.
        """
        state = read_state(state)
        # Another rank's state (a checkpoint saved on rank 0 only) resumes like a world-size change: at
        # the same global step, with this rank's own fresh augmentation draws.
        elastic = match_fingerprint(state.get("fingerprint", {}), self._fingerprint(), flags=self.cfg.flags)
        epoch, position = int(state["epoch"]), int(state["position"])
        try:
            self._sampler.load_state_dict(dict(state["sampler"], epoch=epoch, position=0))
        except ConfigError as e:
            raise StateError(f"loader state does not match this loader's sampler: {e}") from e
        steps = self._sampler.steps_per_epoch()
        check_point(state, steps_per_epoch=steps, batch_size=self.batch_size, elastic=elastic)
        self._sampler.set_epoch(epoch, position)
        self.quarantine.load(state.get("quarantine"), len(self.index))
        if self.oracle is not None and state.get("oracle") is not None:
            self.oracle.load_state_dict(state["oracle"])
        self._oracle_ended = None
        self._skipped = {}
        if not elastic:
            for d in state.get("skipped", []):
                d = dict(d)
                self._skipped.setdefault(int(d.pop("epoch")), []).append(d)
        backend_state = state.get("backend") or {}
        # The backend drops what it runs and resumes this state at the next start (mid-epoch: the same
        # batches, bit-exact; at an epoch's end: it moves on to the next epoch from there). A state from
        # another world size has nothing to resume in it: that start begins afresh at the position.
        self._backend.restore(backend_state if not elastic and (position or backend_state) else None)
        if position == steps:   # a finished epoch moves on to the next one afresh
            self._run = EpochRun(epoch, position, Stage.FINISHED, planned=True)
        else:
            self._run = EpochRun(epoch, position, Stage.READY, planned=True,
                                 loaded=current_format(state) if position else None)

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


def create_loader(cfg: LoaderConfig, split: str = "train", oracle=None,
                  oracle_options: dict | None = None) -> Loader:
    """Check ``cfg`` (ConfigError naming the fields) and build the loader of ``split`` ("train" | "eval").

    ``oracle``: a :class:`vitdata.oracle.difficulty.DifficultyOracle` (or anything with ``report`` and ``end_epoch``)
    that plans each training epoch from the reported losses, or a policy name ("data-centric",
    "prune-easy", "weighted", "uniform"): a DifficultyOracle sized from the index, seeded with ``cfg.seed``.
    An oracle whose ``num_samples`` differs from the index is refused here (ConfigError).
    ``oracle_options``: keywords of the named policy (``{"mix_lever": True}`` for data-centric's Mixup/CutMix
    lever; prune-easy's ``epochs`` defaults to ``cfg.schedule.epochs``).
    """
    from vitdata.oracle.difficulty import make_oracle

    if not isinstance(cfg, LoaderConfig):
        raise ConfigError(f"cfg must be a LoaderConfig, got {type(cfg).__name__}", ("cfg",))
    try:
        loader = Loader(cfg, split, None)
    except ConfigError as e:       # spoken in the user's options when the config came from a command line
        raise e.named_as(cfg.flags) from None
    try:
        loader.oracle = make_oracle(oracle, len(loader.index), seed=cfg.seed, device=loader.device,
                                    epochs=cfg.schedule.epochs, source=f"the data source {loader.index.spec!r}",
                                    **(oracle_options or {}))
    except BaseException:
        loader.close()
        raise
    return loader
