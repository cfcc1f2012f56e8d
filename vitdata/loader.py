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

Two backends yield the same :class:`Batch` contract from the same :class:`~vitdata.sampler.Sampler`
and :class:`~vitdata.index.SampleIndex`:

- ``"dali"``: the graphs of ``vitdata.pipelines`` (decode with the random-resized crop fused in,
  resize to the schedule's size, RandAugment with a per-sample magnitude, flip, normalise), GPU ops
  when CUDA is available and CPU ops otherwise. A parallel external source maps DALI's
  ``SampleInfo.idx_in_epoch`` to the sampler's id through a per-epoch control file.
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
step: iterating the loader again (``for batch in loader`` inside a ``try``) continues with the next step
of the epoch, so an evaluation loop can log the bad sample and go on without rebuilding the loader. A
decoder error that still happens is re-raised as a DataError naming the ids and paths of the batch; the
pipeline is not reusable after it (rebuild the loader, or ``load_state_dict`` a saved state).

Resume: :meth:`Loader.state_dict` holds the epoch, the consumed position (never prefetched batches), the
sampler state with its plan, the DALI checkpoint (base64 text) and a config fingerprint; after
:meth:`Loader.load_state_dict` the remaining ids, and on CPU the pixels, equal the uninterrupted run's.
A state taken after ``set_epoch(e + 1)`` but before that epoch's first batch keeps the finished epoch's
DALI checkpoint, so the resumed epoch continues the same augmentation RNG stream.
Reports made to the oracle after the state was taken are not part of it.
"""
from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from vitdata.errors import REASONS, ConfigError, DataError, StateError, WorkerError

__all__ = ["LoaderConfig", "AugmentConfig", "OutputConfig", "EvalConfig", "ScheduleConfig", "DistributedConfig",
           "Batch", "Loader", "create_loader"]

STATE_FORMAT = 1
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "triangular")
_RANDAUG_INTERPOLATIONS = ("nearest", "bilinear")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

@dataclass
class AugmentConfig:
    """Training augmentation (evaluation uses only ``interpolation``)."""
    scale: tuple[float, float] = (0.08, 1.0)        # random-resized-crop area fraction range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)     # random-resized-crop aspect-ratio range
    hflip: float = 0.5                              # horizontal flip probability
    randaug: bool = True                            # RandAugment on (magnitude and ops from the schedule)
    randaug_magnitude: float = 9.0                  # timm scale 0..10; used by the "constant" schedule
    randaug_num_ops: int = 2                        # ops per image; used by the "constant" schedule
    randaug_max_ops: int | None = None              # op levels built into the DALI graph (None: randaug_num_ops)
    randaug_exclude: tuple[str, ...] = ()           # RandAugment ops to leave out (DALI names, e.g. "equalize")
    interpolation: str = "bilinear"                 # resize filter: bilinear | bicubic | nearest | lanczos
    # Resampling of RandAugment's geometric ops (rotate, shear, translate): "nearest" (torchvision's
    # RandAugment default) or "bilinear" (timm's). Nearest is the default because DALI's CPU warp_affine
    # costs 1.5 ms per 224 px image with bilinear and 0.09 ms with nearest (2 threads, measured with
    # DALI 2.4); on a GPU either is cheap. Both backends follow this setting.
    randaug_interpolation: str = "nearest"
    patch_size: int = 16                            # PatchErasing grid cell (the model's patch size)


@dataclass
class OutputConfig:
    """What the images look like when they reach the trainer."""
    dtype: str = "float32"                          # float32 | bfloat16 | float16
    channels_last: bool = False                     # torch.channels_last memory format
    mean: tuple[float, float, float] = IMAGENET_MEAN  # on the 0..1 scale
    std: tuple[float, float, float] = IMAGENET_STD    # on the 0..1 scale
    device: str = "auto"                            # "auto" (this rank's GPU, else CPU) | "cpu" | "cuda[:n]"


@dataclass
class EvalConfig:
    """Evaluation view: resize the shorter side to image_size / crop_pct, centre-crop image_size."""
    image_size: int | None = None                   # None: the top-level image_size
    crop_pct: float = 0.875                         # timm's crop_pct
    batch_size: int | None = None                   # None: the top-level batch_size


@dataclass
class ScheduleConfig:
    """The curriculum: a named schedule from vitdata.schedules, or a Schedule object."""
    name: str = "constant"                          # constant | efficienttrain | linear | progressive-size | ...
    epochs: int = 1                                 # run length the schedule is laid out for
    kwargs: dict = field(default_factory=dict)      # extra make_schedule keywords
    schedule: Any = None                            # a vitdata.schedules.Schedule; overrides name/kwargs
    patch_size: int | None = None                   # round scheduled sizes to this grid (from_timm_model: the model's)


@dataclass
class DistributedConfig:
    """Rank and world size; None takes them from torch.distributed when it is initialised (else 0 / 1)."""
    rank: int | None = None
    world_size: int | None = None


@dataclass
class LoaderConfig:
    """Everything :func:`create_loader` needs. Checked when the loader is created."""
    data: str = ""                                  # ImageFolder dir | dir of .tar | "a-{000..009}.tar" | one .tar
    eval_data: str | None = None                    # evaluation data (None: ``data``)
    batch_size: int = 256                           # per rank
    image_size: int = 224                           # final output side (the schedule may vary it)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    backend: str = "auto"                           # auto (dali when importable) | dali | torch
    num_threads: int = 2                            # DALI CPU threads
    num_workers: int = 2                            # DALI source workers / DataLoader workers
    prefetch: int = 2                               # batches prepared ahead (DALI queue depth)
    worker_start_timeout: float = 120.0             # s for DALI source workers to start (killed, retried once)
    seed: int = 0                                   # order and augmentation seed
    on_error: str = "auto"                          # auto (skip for train, raise for eval) | skip | raise
    max_pixels: int = 64_000_000                    # per-image pixel budget, checked from the header
    verify_checksums: bool = False                  # CRC-32 of every sample checked against the index (built
                                                    # with checksums when missing); catches flipped bytes
    start_method: str = "auto"                      # worker start: auto (spawn with CUDA, else fork) | spawn | fork

    @classmethod
    def from_timm_model(cls, model, **overrides) -> "LoaderConfig":
        """Size, mean, std, interpolation and crop_pct from ``timm.data.resolve_data_config(model=model)``.

        The size is the model's own input size (``patch_embed.img_size``) when it has one, since a model
        built with ``img_size=`` keeps its registry ``pretrained_cfg``; scheduled sizes are rounded to
        the model's patch size (``schedule.patch_size``), so a curriculum never makes a size it cannot tile. ``overrides`` are top-level
        fields (``data=``, ``batch_size=`` ...). A nested section given as an override (``output=
        OutputConfig(dtype="bfloat16")``) is merged: its fields left at their defaults keep the values
        taken from the model, so the model's mean and std survive.
        """
        from timm.data import resolve_data_config

        dc = resolve_data_config({}, model=model)
        size = int(dc["input_size"][-1])
        own = getattr(getattr(model, "patch_embed", None), "img_size", None)
        if own is not None:
            size = int(own[-1] if isinstance(own, (tuple, list)) else own)
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        patch = int(patch[-1] if isinstance(patch, (tuple, list)) else patch) if patch is not None else None
        interp = dc.get("interpolation", "bilinear")
        cfg = cls(image_size=size,
                  augment=AugmentConfig(interpolation=interp if interp in _INTERPOLATIONS else "bilinear",
                                        **({"patch_size": patch} if patch else {})),
                  schedule=ScheduleConfig(patch_size=patch),
                  output=OutputConfig(mean=tuple(float(x) for x in dc["mean"]), std=tuple(float(x) for x in dc["std"])),
                  eval=EvalConfig(crop_pct=float(dc.get("crop_pct", 0.875))))
        for name, value in list(overrides.items()):
            base = getattr(cfg, name, None)
            if dataclasses.is_dataclass(base) and type(value) is type(base):
                default = type(base)()
                changed = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                           if getattr(value, f.name) != getattr(default, f.name)}
                overrides[name] = dataclasses.replace(base, **changed)
        return dataclasses.replace(cfg, **overrides)


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


def _dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except Exception:
        return False
    return True


def _check_config(cfg: LoaderConfig, split: str) -> None:
    """Raise ConfigError naming the fields of the first bad combination found."""
    def bad(msg, *fields):
        raise ConfigError(msg, fields)

    if split not in ("train", "eval"):
        bad(f"split must be 'train' or 'eval', got {split!r}", "split")
    data = cfg.eval_data if (split == "eval" and cfg.eval_data) else cfg.data
    if not data:
        bad("no data source given", "data")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        bad(f"batch_size must be a positive int, got {cfg.batch_size!r}", "batch_size")
    if not isinstance(cfg.image_size, int) or cfg.image_size < 8:
        bad(f"image_size must be an int >= 8, got {cfg.image_size!r}", "image_size")
    a, o, e = cfg.augment, cfg.output, cfg.eval
    if len(a.scale) != 2 or not 0 < a.scale[0] <= a.scale[1] <= 1:
        bad(f"augment.scale must be (lo, hi) with 0 < lo <= hi <= 1, got {a.scale}", "augment.scale")
    if len(a.ratio) != 2 or not 0 < a.ratio[0] <= a.ratio[1]:
        bad(f"augment.ratio must be (lo, hi) with 0 < lo <= hi, got {a.ratio}", "augment.ratio")
    if not 0 <= a.hflip <= 1:
        bad(f"augment.hflip is a probability, got {a.hflip}", "augment.hflip")
    if not 0 <= a.randaug_magnitude <= 10:
        bad(f"augment.randaug_magnitude is on timm's 0..10 scale, got {a.randaug_magnitude}",
            "augment.randaug_magnitude")
    if a.randaug_num_ops < 0:
        bad("augment.randaug_num_ops must be >= 0", "augment.randaug_num_ops")
    if a.randaug_max_ops is not None and a.randaug_max_ops < max(1, a.randaug_num_ops):
        bad(f"augment.randaug_max_ops {a.randaug_max_ops} is below augment.randaug_num_ops {a.randaug_num_ops}",
            "augment.randaug_max_ops", "augment.randaug_num_ops")
    if a.interpolation not in _INTERPOLATIONS:
        bad(f"augment.interpolation must be one of {_INTERPOLATIONS}, got {a.interpolation!r}", "augment.interpolation")
    if a.randaug_interpolation not in _RANDAUG_INTERPOLATIONS:
        bad(f"augment.randaug_interpolation must be one of {_RANDAUG_INTERPOLATIONS}, got "
            f"{a.randaug_interpolation!r}", "augment.randaug_interpolation")
    if a.patch_size < 1:
        bad("augment.patch_size must be >= 1", "augment.patch_size")
    if o.dtype not in _DTYPES:
        bad(f"output.dtype must be one of {tuple(_DTYPES)}, got {o.dtype!r}", "output.dtype")
    if len(o.mean) != 3 or len(o.std) != 3 or min(o.std) <= 0:
        bad("output.mean and output.std need 3 values each, std > 0", "output.mean", "output.std")
    if not 0 < e.crop_pct <= 1:
        bad(f"eval.crop_pct must lie in (0, 1], got {e.crop_pct}", "eval.crop_pct")
    if cfg.backend not in ("auto", "dali", "torch"):
        bad(f"backend must be auto | dali | torch, got {cfg.backend!r}", "backend")
    if cfg.backend == "dali" and not _dali_available():
        bad("backend='dali' but nvidia.dali cannot be imported; install nvidia-dali or use backend='torch'", "backend")
    if cfg.num_workers < 0 or cfg.num_threads < 1 or cfg.prefetch < 1:
        bad("num_workers >= 0, num_threads >= 1 and prefetch >= 1 are required", "num_workers", "num_threads", "prefetch")
    if cfg.on_error not in ("auto", "skip", "raise"):
        bad(f"on_error must be auto | skip | raise, got {cfg.on_error!r}", "on_error")
    if not cfg.worker_start_timeout > 0:
        bad("worker_start_timeout must be > 0 seconds", "worker_start_timeout")
    if cfg.max_pixels < 1:
        bad("max_pixels must be >= 1", "max_pixels")
    if cfg.start_method not in ("auto", "spawn", "fork"):
        bad(f"start_method must be auto | spawn | fork, got {cfg.start_method!r}", "start_method")
    if cfg.seed < 0:
        bad("seed must be >= 0", "seed")
    if cfg.schedule.schedule is None and cfg.schedule.epochs < 1:
        bad("schedule.epochs must be >= 1", "schedule.epochs")
    eval_size = e.image_size or cfg.image_size
    if split == "eval" and round(eval_size / e.crop_pct) < eval_size:
        bad("eval crop larger than the resized image", "eval.image_size", "eval.crop_pct")


def _dist_rank_world(cfg: LoaderConfig) -> tuple[int, int]:
    rank, world = cfg.distributed.rank, cfg.distributed.world_size
    if rank is None or world is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world = dist.get_world_size() if world is None else world
    rank = 0 if rank is None else int(rank)
    world = 1 if world is None else int(world)
    if not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is not in [0, world_size {world})", ("distributed.rank", "distributed.world_size"))
    return rank, world


def _output_device(cfg: LoaderConfig, rank: int) -> torch.device:
    if cfg.output.device == "auto":
        if torch.cuda.is_available():
            from vitdata.pipelines.graphs import choose_device

            return torch.device("cuda", choose_device(rank))
        return torch.device("cpu")
    return torch.device(cfg.output.device)


def _start_method(cfg: LoaderConfig) -> str:
    if cfg.start_method != "auto":
        return cfg.start_method
    # Never fork after CUDA is initialised (the child inherits a broken context); spawn also where CUDA
    # exists at all, since the trainer may initialise it before the next pipeline is built.
    return "spawn" if torch.cuda.is_available() or torch.cuda.is_initialized() else "fork"


# --------------------------------------------------------------------------------------------------
# Backends: each turns one epoch's control (ids and per-step knobs) into raw batches
# --------------------------------------------------------------------------------------------------

_WORKER_DATA_ERROR = __import__("re").compile(
    r"DataError: \[(\w+)\] sample (-?\d+): (.+?)(?:: |\n|$)((?:.|\n)*?)(?=\n\n|\Z)")


def _make_control(epoch: int, ids: np.ndarray, knobs: list, extra_mag: np.ndarray) -> dict[str, np.ndarray]:
    return {"epoch": np.array(epoch, np.int64), "ids": np.ascontiguousarray(ids.reshape(-1), np.int64),
            "step_size": np.array([k.image_size for k in knobs], np.int32),
            "step_magnitude": np.array([k.randaug_magnitude for k in knobs], np.float32),
            "step_num_ops": np.array([k.randaug_num_ops for k in knobs], np.int32),
            "extra_magnitude": np.ascontiguousarray(extra_mag.reshape(-1), np.float32)}


class _DaliBackend:
    """Owns the DALI pipeline. ``dali_epoch`` is DALI's ``SampleInfo.epoch_idx`` of the loader's current
    epoch; each loader epoch is exactly one DALI epoch, so the consumed DALI iterations of it equal the
    loader's position and a checkpoint taken between ``run()`` calls reflects consumed batches only."""

    name = "dali"

    def __init__(self, loader: "Loader"):
        from vitdata.pipelines.graphs import GraphSpec

        # a weak reference: the Loader owns its backend, and a cycle would keep the workers alive after
        # `del loader` until the cycle collector happens to run
        self.loader = weakref.proxy(loader)
        cfg = loader.cfg
        # GPU ops on the output GPU; CPU ops (device_id=None) when the output lives on the CPU.
        self.device_id = loader.device.index if loader.device.type == "cuda" else None
        a, o = cfg.augment, cfg.output
        max_ops = a.randaug_max_ops or max(1, a.randaug_num_ops)
        eval_size = cfg.eval.image_size or cfg.image_size
        self.spec = GraphSpec(train=loader.train, scale=tuple(a.scale), ratio=tuple(a.ratio), hflip=a.hflip,
                              randaug=a.randaug and loader.train, max_ops=max_ops, exclude_ops=tuple(a.randaug_exclude),
                              interpolation=a.interpolation, randaug_interpolation=a.randaug_interpolation,
                              eval_size=eval_size,
                              eval_resize=int(round(eval_size / cfg.eval.crop_pct)),
                              mean=tuple(255.0 * m for m in o.mean), std=tuple(255.0 * s for s in o.std),
                              float16=o.dtype == "float16", layout="HWC" if o.channels_last else "CHW")
        self.max_ops = max_ops
        self.pipe = None
        self.dali_epoch = 0
        self.samples = 0       # length of the current DALI epoch's control (ids)
        self.generation = 0
        self.root = tempfile.mkdtemp(prefix="vitdata-ctl-")
        self.ctl_dir = None

    def _source(self):
        from vitdata.pipelines.graphs import num_source_outputs
        from vitdata.pipelines.source import EpochSource

        ld = self.loader
        return EpochSource(ld.reader, ld.index, self.ctl_dir, ld.batch_size, self.max_ops, ld.cfg.max_pixels,
                           num_source_outputs(self.spec))

    def _build(self, checkpoint: bytes | None, seed_epoch: int) -> None:
        from vitdata.pipelines.graphs import build_pipeline

        self.close_pipe()
        ld, cfg = self.loader, self.loader.cfg
        seed = int(np.random.SeedSequence([cfg.seed, ld.rank, seed_epoch, 0x0DA1]).generate_state(1)[0] & 0x7FFFFFFF)
        self.pipe = build_pipeline(self._source(), self.spec, batch_size=ld.batch_size, num_threads=cfg.num_threads,
                                   device_id=self.device_id, py_num_workers=cfg.num_workers,
                                   py_start_method=_start_method(cfg), prefetch=cfg.prefetch, seed=seed,
                                   checkpoint=checkpoint, start_timeout=cfg.worker_start_timeout)

    def _new_generation(self) -> None:
        self.generation += 1
        self.ctl_dir = os.path.join(self.root, f"gen{self.generation}")
        os.makedirs(self.ctl_dir, exist_ok=True)

    def start_epoch(self, control: dict, epoch: int, finished_previous: bool) -> None:
        """Begin ``epoch`` at position 0. ``finished_previous``: the pipeline consumed the whole previous
        epoch, so it can move on by a reset; otherwise it is rebuilt."""
        from vitdata.pipelines.source import control_path, write_control

        if self.pipe is not None and finished_previous:
            try:
                self.pipe.run()   # every batch consumed: the source signals the end now
                raise RuntimeError("DALI pipeline produced a batch past the end of the epoch")
            except StopIteration:
                pass
            write_control(control_path(self.ctl_dir, self.dali_epoch + 1), control)
            self.pipe.reset()
            self.dali_epoch += 1
        else:
            self._new_generation()
            self.dali_epoch = 0
            write_control(control_path(self.ctl_dir, 0), control)
            self._build(None, epoch)
        self.samples = len(control["ids"])

    def start_at(self, control: dict, epoch: int, position: int) -> None:
        """Begin ``epoch`` at step ``position`` without a DALI checkpoint (elastic resume): the pipeline's
        epoch is the remaining steps only, with fresh augmentation draws seeded from (seed, rank, epoch)."""
        from vitdata.pipelines.source import control_path, write_control

        b = self.loader.batch_size
        tail = dict(control)
        tail["ids"] = control["ids"][position * b:]
        tail["extra_magnitude"] = control["extra_magnitude"][position * b:]
        for k in ("step_size", "step_magnitude", "step_num_ops"):
            tail[k] = control[k][position:]
        self._new_generation()
        self.dali_epoch = 0
        write_control(control_path(self.ctl_dir, 0), tail)
        self._build(None, epoch)
        self.samples = len(tail["ids"])

    def restore(self, state: dict, control: dict) -> None:
        from vitdata.pipelines.source import control_path, write_control

        ck = state.get("checkpoint")
        if ck is None:
            raise StateError("loader state has no DALI checkpoint (field backend.checkpoint)")
        self._new_generation()
        self.dali_epoch = int(state["dali_epoch"])
        write_control(control_path(self.ctl_dir, self.dali_epoch), control)
        self._build(base64.b64decode(ck), 0)
        self.samples = len(control["ids"])

    def restore_finished(self, state: dict) -> None:
        """Rebuild the pipeline from the checkpoint of a fully consumed epoch (taken after ``set_epoch``
        of the next one, before its first batch), so ``start_epoch(..., finished_previous=True)`` moves on
        by a reset and the augmentation RNG continues as in the uninterrupted run. The source reads only
        the length of that epoch's control (every position is past its end), so a placeholder of the
        saved length stands in for it."""
        from vitdata.pipelines.source import control_path, write_control

        ck, n = state.get("checkpoint"), int(state.get("samples") or 0)
        if ck is None or n <= 0:
            raise StateError("loader state at an epoch boundary has no DALI checkpoint of the finished epoch "
                             "(fields backend.checkpoint, backend.samples)")
        self._new_generation()
        self.dali_epoch = int(state["dali_epoch"])
        steps = max(1, n // self.loader.batch_size)
        write_control(control_path(self.ctl_dir, self.dali_epoch),
                      {"ids": np.full(n, -1, np.int64), "extra_magnitude": np.zeros(n, np.float32),
                       "step_size": np.zeros(steps, np.int32), "step_magnitude": np.zeros(steps, np.float32),
                       "step_num_ops": np.zeros(steps, np.int32), "epoch": np.array(-1, np.int64)})
        self._build(base64.b64decode(ck), 0)
        self.samples = n

    def next(self, step_ids: np.ndarray) -> dict:
        try:
            outs = self.pipe.run()
        except StopIteration:
            raise
        except Exception as e:
            dead = self._dead_workers()
            self.close_pipe()
            if dead:
                ids = [int(i) for i in step_ids if i >= 0]
                ld = self.loader
                raise WorkerError(
                    f"DALI source worker {', '.join(f'pid {p} ({why})' for p, why in dead)} died while preparing "
                    f"{ld.split} epoch {ld.epoch} step {ld.position} (rank {ld.rank}); the step's sample ids: {ids} "
                    f"({', '.join(ld.index.describe(i) for i in ids[:4])}{' ...' if len(ids) > 4 else ''}). "
                    f"DALI said: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__}",
                    pids=[p for p, _ in dead], sample_ids=ids) from e
            raise self.loader._decode_error(step_ids, e) from e
        images, label, sid, orig, status = outs
        return {"images": self._to_torch(images), "labels": np.array(label.as_tensor()),
                "ids": np.array(sid.as_tensor()), "orig": np.array(orig.as_tensor()),
                "status": np.array(status.as_tensor()), "layout": self.spec.layout}

    def _dead_workers(self) -> list[tuple[int, str]]:
        """(pid, how it ended) of the pipeline's source workers that are no longer running."""
        pool = getattr(getattr(self.pipe, "_py_pool", None), "pool", None)
        dead = []
        for proc in getattr(pool, "_processes", None) or []:
            try:
                code = proc.exitcode
            except Exception:
                continue
            if code is not None:
                dead.append((proc.pid, f"killed by signal {-code}" if code < 0 else f"exit code {code}"))
        return dead

    def _to_torch(self, tl) -> torch.Tensor:
        dev = self.loader.device
        if self.device_id is None:
            t = torch.from_numpy(np.array(tl.as_tensor()))
            return t.to(dev, non_blocking=True) if dev.type != "cpu" else t
        # GPU: copy DALI's buffer into a torch tensor on the consumer's current stream, ordered after
        # DALI's work by DALI's own event; the trainer's kernels on that stream then wait for it.
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dt = tl.as_tensor()
        out = torch.empty(dt.shape(), dtype=torch.float16 if self.spec.float16 else torch.float32, device=dev)
        feed_ndarray(dt, out, cuda_stream=torch.cuda.current_stream(dev))
        return out

    def state(self) -> dict:
        ck = None if self.pipe is None else base64.b64encode(bytes(self.pipe.checkpoint())).decode("ascii")
        return {"checkpoint": ck, "dali_epoch": self.dali_epoch, "samples": self.samples}

    def close_pipe(self) -> None:
        if self.pipe is not None:
            pipe, self.pipe = self.pipe, None
            del pipe

    def close(self) -> None:
        self.close_pipe()
        shutil.rmtree(self.root, ignore_errors=True)


class _TorchBackend:
    """A DataLoader over positions of the epoch; each worker gets the epoch's control with the dataset."""

    name = "torch"

    def __init__(self, loader: "Loader"):
        from vitdata._torch_backend import EpochDataset

        # a weak reference: the Loader owns its backend, and a cycle would keep the workers alive after
        # `del loader` until the cycle collector happens to run
        self.loader = weakref.proxy(loader)
        cfg = loader.cfg
        self.dataset = EpochDataset(loader.reader, loader.index, loader.batch_size, cfg, loader.train,
                                    loader.rank)
        self.it = None

    def start_epoch(self, control: dict, epoch: int, finished_previous: bool, start: int = 0) -> None:
        from torch.utils.data import DataLoader

        self.it = None
        self.dataset.control = control
        b = self.loader.batch_size
        steps = len(control["ids"]) // b
        batches = [list(range(s * b, (s + 1) * b)) for s in range(start, steps)]
        cfg = self.loader.cfg
        kw = {}
        if cfg.num_workers > 0:
            import multiprocessing as mp

            kw = dict(prefetch_factor=cfg.prefetch, multiprocessing_context=mp.get_context(_start_method(cfg)))
        dl = DataLoader(self.dataset, batch_sampler=batches, num_workers=cfg.num_workers,
                        collate_fn=_collate, pin_memory=self.loader.device.type == "cuda", **kw)
        self.it = iter(dl)

    def restore(self, state: dict, control: dict, position: int) -> None:
        self.start_epoch(control, int(control["epoch"]), False, start=position)

    def start_at(self, control: dict, epoch: int, position: int) -> None:
        self.start_epoch(control, epoch, False, start=position)

    def next(self, step_ids: np.ndarray) -> dict:
        imgs, labels, ids, orig, status = next(self.it)
        dev = self.loader.device
        o = self.loader.cfg.output
        x = imgs.to(dev, non_blocking=True)
        mean = torch.tensor([255.0 * m for m in o.mean], device=dev).view(1, 3, 1, 1)
        std = torch.tensor([255.0 * s for s in o.std], device=dev).view(1, 3, 1, 1)
        x = (x.float() - mean) / std
        return {"images": x, "labels": labels.numpy(), "ids": ids.numpy(), "orig": orig.numpy(),
                "status": status.numpy(), "layout": "CHW"}

    def state(self) -> dict:
        return {}

    def close(self) -> None:
        self.it = None


def _collate(items):
    imgs = torch.stack([it[0] for it in items])
    cols = [torch.tensor([it[k] for it in items], dtype=torch.int64) for k in (1, 2, 3, 4)]
    return (imgs, *cols)


# --------------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------------

class Loader:
    """Iterates :class:`Batch` es of one split; see the module docstring. Build with :func:`create_loader`."""

    def __init__(self, cfg: LoaderConfig, split: str, oracle=None):
        from vitdata.index import SampleReader, open_index
        from vitdata.sampler import Sampler

        _check_config(cfg, split)
        self.cfg, self.split, self.oracle = cfg, split, oracle
        self.train = split == "train"
        self.rank, self.world_size = _dist_rank_world(cfg)
        self.device = _output_device(cfg, self.rank)
        self.batch_size = cfg.batch_size if self.train else (cfg.eval.batch_size or cfg.batch_size)
        self.on_error = cfg.on_error if cfg.on_error != "auto" else ("skip" if self.train else "raise")
        data = cfg.eval_data if (not self.train and cfg.eval_data) else cfg.data
        try:
            # bad_labels="mark": one bad tar label is that sample's bad_label skip (or error), not a dead dataset
            self.index = open_index(data, checksums=cfg.verify_checksums, bad_labels="mark")
        except DataError as e:
            raise ConfigError(f"cannot open data source {data!r}: {e}", ("eval_data" if not self.train and cfg.eval_data
                                                                        else "data",)) from e
        self.reader = SampleReader(self.index, verify=cfg.verify_checksums)
        self.sampler = Sampler(len(self.index), self.batch_size, seed=cfg.seed, rank=self.rank,
                               world_size=self.world_size, shuffle=self.train, drop_last=self.train)
        self.schedule = self._make_schedule()
        self._check_knobs()
        backend = cfg.backend if cfg.backend != "auto" else ("dali" if _dali_available() else "torch")
        self.backend_name = backend
        self._backend = _DaliBackend(self) if backend == "dali" else _TorchBackend(self)
        self.epoch = 0
        self.position = 0
        self._started = False       # the current epoch's pipeline input has been prepared
        self._finished = False      # every step of the current epoch was consumed
        self._planned_epoch = None  # epoch whose oracle plan is set on the sampler
        self._pending = None        # a restored state waiting for the next iteration
        self._skipped: dict[int, list[dict]] = {}
        self._prev_finished = False
        self._closed = False

    @property
    def dali_device_id(self) -> int | None:
        """The CUDA device id DALI's pipeline runs on, or None (CPU operators, or the torch backend)."""
        return getattr(self._backend, "device_id", None) if self.backend_name == "dali" else None

    # -- configuration pieces ------------------------------------------------------------------------
    def _make_schedule(self):
        from vitdata.schedules import Schedule, make_schedule

        sc, a = self.cfg.schedule, self.cfg.augment
        if sc.schedule is not None:
            if not isinstance(sc.schedule, Schedule):
                raise ConfigError("schedule.schedule must be a vitdata.schedules.Schedule", ("schedule.schedule",))
            return sc.schedule
        kw = dict(sc.kwargs)
        if sc.patch_size:  # every size the model sees must tile into its patches
            kw.setdefault("patch_size", sc.patch_size)
        if sc.name == "constant":
            kw.setdefault("randaug_magnitude", a.randaug_magnitude)
            kw.setdefault("randaug_num_ops", a.randaug_num_ops)
        return make_schedule(sc.name, sc.epochs, self.sampler.steps_per_epoch(), self.cfg.image_size, **kw)

    def _check_knobs(self) -> None:
        if not self.train:
            return
        max_ops = self.cfg.augment.randaug_max_ops or max(1, self.cfg.augment.randaug_num_ops)
        p = self.cfg.augment.patch_size
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
            from vitdata.schedules import Knobs

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
        if epoch == self.epoch and not self._finished:
            self._ensure_plan()
            return
        self._prev_finished = self._finished and self._started
        self.epoch, self.position, self._started, self._finished = epoch, 0, False, False
        self._ensure_plan()

    def _ensure_plan(self) -> None:
        if self._planned_epoch == self.epoch or self._started:
            return
        plan = None
        if self.oracle is not None and self.train and self.epoch > 0:
            mark = getattr(self.oracle, "mark_skipped", None)
            if mark is not None:   # flags, not losses: the oracle gives bad files the floor weight
                mark([d["id"] for d in self._skipped.get(self.epoch - 1, [])])
            plan = self.oracle.end_epoch(self.epoch - 1)
        if self.oracle is not None or self._planned_epoch is None:
            self.sampler.set_plan(plan)
        self._planned_epoch = self.epoch

    def _control(self) -> dict:
        ids = self.sampler.epoch_ids(self.epoch)
        steps = ids.shape[0]
        knobs = [self.knobs(self.epoch, s) for s in range(steps)]
        plan = self.sampler.plan
        extra = np.zeros(ids.shape, np.float32)
        if plan is not None and plan.aug_magnitude is not None:
            extra = np.where(ids >= 0, plan.aug_magnitude[np.maximum(ids, 0)], 0.0).astype(np.float32)
        return _make_control(self.epoch, ids, knobs, extra)

    def _begin(self) -> None:
        if self._finished:   # a full iteration done and no set_epoch: next epoch
            self.set_epoch(self.epoch + 1)
        self._ensure_plan()
        if self._started:
            return
        self.sampler.set_epoch(self.epoch, self.position)
        control = self._control()
        self._ids = control["ids"].reshape(-1, self.batch_size)
        self._knobs = [self.knobs(self.epoch, s) for s in range(self._ids.shape[0])]
        if self._pending is not None and self._pending.get("_elastic"):
            self._pending = None
            self._backend.start_at(control, self.epoch, self.position)
        elif self._pending is not None:
            state, self._pending = self._pending, None
            if self.backend_name == "dali":
                self._backend.restore(state, control)
            else:
                self._backend.restore(state, control, self.position)
        else:
            self._backend.start_epoch(control, self.epoch, getattr(self, "_prev_finished", False))
        self._started = True
        self._skipped.setdefault(self.epoch, [])

    def __iter__(self) -> Iterator[Batch]:
        if self._closed:
            raise RuntimeError("loader is closed")
        self._begin()
        steps = self._ids.shape[0]
        while self.position < steps:
            step = self.position
            raw = self._backend.next(self._ids[step])
            # The backend has handed this step over, so it is consumed even when _finish raises a
            # DataError for one of its samples: iterating again continues with the next step, in step
            # with the backend's queue.
            self.position += 1
            self.sampler.position = self.position
            if self.position == steps:
                self._finished = True
                self._prev_finished = True
            yield self._finish(raw, step)
        self._finished = True
        self._prev_finished = True

    # -- one batch -----------------------------------------------------------------------------------
    def _finish(self, raw: dict, step: int) -> Batch:
        knobs = self._knobs[step]
        ids_np, orig, status = raw["ids"].reshape(-1), raw["orig"].reshape(-1), raw["status"].reshape(-1)
        self._account(ids_np, orig, status, step)
        images = raw["images"]
        if raw["layout"] == "HWC":
            images = images.permute(0, 3, 1, 2)          # NHWC buffer -> channels_last view
        elif self.cfg.output.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        keep = np.flatnonzero(ids_np >= 0)
        n = len(ids_np)
        if len(keep) < n:                                # eval padding: never counted
            sel = slice(0, len(keep)) if np.array_equal(keep, np.arange(len(keep))) else torch.from_numpy(keep)
            images = images[sel] if isinstance(sel, slice) else images.index_select(0, sel.to(images.device))
            ids_np, labels_np = ids_np[keep], raw["labels"].reshape(-1)[keep]
        else:
            labels_np = raw["labels"].reshape(-1)
        images = self._kernels(images, ids_np, knobs, step)
        dtype = _DTYPES[self.cfg.output.dtype]
        if images.dtype != dtype:
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
                     loss_weight=loss_weight, aug_magnitude=torch.from_numpy(mag))

    def _account(self, ids: np.ndarray, orig: np.ndarray, status: np.ndarray, step: int) -> None:
        from vitdata.pipelines.source import code_reason

        # Eval padding (orig -1) borrows the order's first id, and reports that id's status; the id itself
        # is checked, raised or counted at its own position, so the padding slot is never an error.
        bad = np.flatnonzero((status != 0) & (orig >= 0))
        for j in bad:
            o = int(orig[j])
            reason = code_reason(int(status[j]))
            path = self.index.describe(o)
            if self.on_error == "raise":
                raise DataError(reason, path, sample_id=o,
                                detail=f"{self.split} epoch {self.epoch} step {step} rank {self.rank}")
            self._skipped[self.epoch].append({"id": o, "path": path, "reason": reason, "substitute": int(ids[j]),
                                              "step": step})

    def _decode_error(self, step_ids: np.ndarray, exc: BaseException) -> DataError:
        # The in-thread source raises in this process: its DataError (naming the sample) arrives as an
        # object, possibly as the cause of DALI's own exception.
        seen = exc
        while seen is not None:
            if isinstance(seen, DataError):
                return seen
            seen = seen.__cause__ or seen.__context__
        text = str(exc)
        # A DataError raised in a source worker reaches us only as text inside DALI's message: rebuild
        # it, so the reason and the sample are the worker's (not the batch that happened to be waiting).
        m = _WORKER_DATA_ERROR.search(text)
        if m and m.group(1) in REASONS:
            rest = m.group(4)
            head, _, tb = rest.partition("\n")
            return DataError(m.group(1), m.group(3), sample_id=int(m.group(2)),
                             detail=f"{head} ({self.split} epoch {self.epoch}, rank {self.rank})" + ("\n" + tb if tb else ""))
        ids = [int(i) for i in step_ids if i >= 0]
        paths = ", ".join(self.index.describe(i) for i in ids[:8]) + (" ..." if len(ids) > 8 else "")
        msg = str(exc).strip().splitlines()
        first = next((line for line in msg if "rror" in line), msg[0] if msg else type(exc).__name__)
        return DataError("decode_error", paths, detail=f"a sample of {self.split} epoch {self.epoch} step "
                         f"{self.position} (rank {self.rank}, ids {ids}) failed in DALI: {first[:300]}")

    def _kernels(self, images: torch.Tensor, ids: np.ndarray, knobs, step: int) -> torch.Tensor:
        if not self.train:
            return images
        plan = self.sampler.plan
        from vitdata.policies import boosted_erase_ratio
        erase = boosted_erase_ratio(knobs.erase_ratio, None if plan is None else plan.erase_ratio, ids)
        if knobs.lowpass_size is None and not (erase > 0).any():
            return images
        from vitdata import kernels

        if knobs.lowpass_size is not None and knobs.lowpass_size < images.shape[-1]:
            images = kernels.lowpass_crop(images, knobs.lowpass_size)
        if (erase > 0).any():
            p = self.cfg.augment.patch_size
            grid = (images.shape[-2] // p, images.shape[-1] // p)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
                [self.cfg.seed, self.epoch, step, self.rank, 0xE4A5]).generate_state(1)[0]))
            params = kernels.sample_patch_erase_params(images.shape[0], grid, torch.from_numpy(erase), gen,
                                                       device=images.device)
            # 0 in normalised units is the dataset mean; the batch is a fresh tensor, so erase in place.
            images = kernels.patch_erase(images, params, p, "zero", inplace=True)
        return images

    # -- oracle, skips -------------------------------------------------------------------------------
    def report(self, ids: torch.Tensor, losses: torch.Tensor, **kw) -> None:
        """Forward per-sample losses to the oracle (no host sync here); a no-op without an oracle."""
        if self.oracle is not None:
            self.oracle.report(ids, losses, **kw)

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
        the oracle's state when there is one (a collective under torch.distributed: call on every rank).
        Oracle reports made after this call are not in it, so a resumed run equals one that never made them."""
        oracle = self.oracle.state_dict() if self.oracle is not None and hasattr(self.oracle, "state_dict") else None
        if self._pending is not None:
            return dict(self._pending["_full"], oracle=oracle)
        sampler = self.sampler.state_dict()
        sampler["epoch"], sampler["position"] = self.epoch, self.position
        if self._started or self._finished:
            backend = self._backend.state()
        elif self._prev_finished and self.backend_name == "dali" and self._backend.pipe is not None:
            # set_epoch(e + 1) done, no batch of it yet: keep the finished epoch's DALI checkpoint so a
            # resume moves on from it as the uninterrupted run does (same augmentation RNG stream).
            backend = dict(self._backend.state(), finished_epoch=True)
        else:
            backend = {}
        return {"format": STATE_FORMAT, "fingerprint": self._fingerprint(), "epoch": self.epoch,
                "position": self.position, "finished": self._finished, "started": self._started,
                "sampler": sampler, "backend": backend,
                "skipped": [dict(d, epoch=e) for e, lst in self._skipped.items() for d in lst],
                "oracle": oracle}

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
        if not isinstance(state["format"], int) or state["format"] < 1:
            raise StateError(f"loader state has no valid format version (field format: {state['format']!r})")
        if state["format"] > STATE_FORMAT:
            raise StateError(f"loader state written by a newer vitdata (format {state['format']}; this one reads "
                             f"{STATE_FORMAT})")
        mine, theirs = self._fingerprint(), state.get("fingerprint", {})
        if not isinstance(theirs, dict):
            raise StateError("loader state has no fingerprint (field fingerprint)")
        elastic = theirs.get("world_size") != mine["world_size"]
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
        if self.oracle is not None and state.get("oracle") is not None:
            self.oracle.load_state_dict(state["oracle"])
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._planned_epoch = self.epoch
        self._skipped = {}
        if not elastic:
            for d in state.get("skipped", []):
                d = dict(d)
                self._skipped.setdefault(int(d.pop("epoch")), []).append(d)
        backend_state = state.get("backend") or {}
        self._backend.close() if self.backend_name == "torch" else self._backend.close_pipe()
        self._started, self._finished, self._prev_finished = False, False, False
        started = bool(state.get("started")) or bool(state.get("finished"))
        if elastic:
            if state.get("finished"):
                self._finished = True      # the next iteration (or set_epoch) starts the following epoch afresh
                self._started = True
            elif started:
                self._pending = {"_elastic": True, "_full": state}
        elif started and (self.backend_name == "torch" or backend_state.get("checkpoint")):
            self._pending = dict(backend_state, _full=state)
            if state.get("finished"):
                # The epoch is complete: restore the pipeline at its end now, so the next epoch moves on
                # from it (a reset keeps the augmentation RNG stream of the uninterrupted run).
                self._begin()
                self._finished, self._prev_finished = True, True
        elif (not started and not self.position and self.backend_name == "dali"
              and backend_state.get("finished_epoch") and backend_state.get("checkpoint")):
            # Taken between set_epoch(e + 1) and its first batch: restore the finished epoch's pipeline now,
            # so the first iteration moves on from it by a reset.
            self._backend.restore_finished(backend_state)
            self._prev_finished = True
        elif self.position:
            raise StateError("loader state is mid-epoch but holds no backend state (field backend)")

    def close(self) -> None:
        """Stop workers and remove temporary files. Idempotent."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"Loader(split={self.split!r}, backend={self.backend_name!r}, samples={len(self.index)}, "
                f"batch_size={self.batch_size}, rank={self.rank}/{self.world_size}, epoch={self.epoch}, "
                f"position={self.position})")


def create_loader(cfg: LoaderConfig, split: str = "train", oracle=None) -> Loader:
    """Check ``cfg`` (ConfigError naming the fields) and build the loader of ``split`` ("train" | "eval").

    ``oracle``: a :class:`vitdata.oracle.DifficultyOracle` (or anything with ``report`` and ``end_epoch``)
    that plans each training epoch from the reported losses.
    """
    if not isinstance(cfg, LoaderConfig):
        raise ConfigError(f"cfg must be a LoaderConfig, got {type(cfg).__name__}", ("cfg",))
    return Loader(cfg, split, oracle)
