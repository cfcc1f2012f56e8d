"""The loader's configuration: :class:`LoaderConfig` and its parts, their checks, and ``from_timm_model``.

Nothing here builds anything: :func:`check_config` raises :class:`~vitdata.errors.ConfigError` naming the
fields of a bad combination, and ``vitdata.loader.create_loader`` builds from a checked config.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from vitdata.errors import ConfigError

__all__ = ["LoaderConfig", "AugmentConfig", "OutputConfig", "EvalConfig", "ScheduleConfig", "DistributedConfig",
           "IMAGENET_MEAN", "IMAGENET_STD", "check_config"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# the short spellings of the command lines (--dtype, --amp) name the same dtypes
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of ``name``: float32 | bfloat16 | float16, or fp32 | bf16 | fp16."""
    return DTYPES[DTYPE_ALIASES.get(name, name)]

# Resize filters a config may name; each backend maps the names to its own (pipelines.graphs for DALI,
# backends.torch.torchvision_interpolation).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "triangular")
DECODE_SCALE = ("auto", "on", "off")
RANDAUG_INTERPOLATIONS = ("nearest", "bilinear")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875
ERASE_CELL = 16          # PatchErasing's grid cell when augment.patch_size is not set


@dataclass
class AugmentConfig:
    """Training augmentation (evaluation uses only ``interpolation``)."""
    scale: tuple[float, float] = (0.08, 1.0)        # random-resized-crop area fraction range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)     # random-resized-crop aspect-ratio range
    hflip: float = 0.5                              # horizontal flip probability
    randaug: bool = True                            # RandAugment on (magnitude and ops from the schedule)
    # The constant schedule's RandAugment (None: magnitude 9, 2 ops). Any other schedule decides both
    # itself, and giving them with one is refused: one place sets each knob.
    randaug_magnitude: float | None = None          # timm scale 0..10
    randaug_num_ops: int | None = None              # ops per image
    randaug_max_ops: int | None = None              # op levels built into the DALI graph (None: the ops, >= 2)
    randaug_exclude: tuple[str, ...] = ()           # RandAugment ops to leave out (DALI names, e.g. "equalize")
    interpolation: str | None = None                # resize filter: bilinear | bicubic | nearest | lanczos
                                                    # (None: the model's with from_timm_model, else bilinear)
    # Resampling of RandAugment's geometric ops (rotate, shear, translate): "nearest" (torchvision's
    # RandAugment default) or "bilinear" (timm's). Nearest is the default because DALI's CPU warp_affine
    # costs 1.5 ms per 224 px image with bilinear and 0.09 ms with nearest (2 threads, measured with
    # DALI 2.4); on a GPU either is cheap. Both backends follow this setting.
    randaug_interpolation: str = "nearest"
    # The model's patch size: PatchErasing's grid cell, and the grid every scheduled size is rounded to so a
    # curriculum never makes a size the model cannot tile. None: 16 (a ViT/16's grid) when image_size is a
    # multiple of 16, else no rounding (16 px erase cells); from_timm_model sets the model's; 1: no rounding.
    patch_size: int | None = None


@dataclass
class OutputConfig:
    """What the images look like when they reach the trainer."""
    dtype: str = "float32"                          # float32 | bfloat16 | float16
    channels_last: bool = False                     # torch.channels_last memory format
    mean: tuple[float, float, float] | None = None  # on the 0..1 scale (None: the model's with from_timm_model,
    std: tuple[float, float, float] | None = None   # else ImageNet's)
    device: str | torch.device = "auto"             # "auto" (this rank's GPU, else CPU) | "cpu" | "cuda[:n]" |
                                                    # a torch.device; a GPU without index: this rank's


@dataclass
class EvalConfig:
    """Evaluation data and view: resize the shorter side to image_size / crop_pct, centre-crop image_size."""
    data: str | None = None                         # evaluation data, as LoaderConfig.data (None: ``data``;
                                                    # "": no evaluation split, split="eval" is refused)
    image_size: int | None = None                   # None: the top-level image_size
    crop_pct: float | None = None                   # timm's crop_pct (None: the model's with from_timm_model,
                                                    # else 0.875)
    batch_size: int | None = None                   # None: the top-level batch_size


@dataclass
class ScheduleConfig:
    """The curriculum: a named schedule (``name``, ``epochs``, ``kwargs``), or a ready
    :class:`vitdata.curriculum.schedule.Schedule` as ``schedule`` with none of the three."""
    name: str = "constant"                          # constant | efficienttrain | linear | progressive-size | ...
    epochs: int | None = None                       # run length the schedule is laid out for: required by
                                                    # every schedule but "constant" (None there: 1)
    kwargs: dict = field(default_factory=dict)      # extra make_schedule keywords
    schedule: Any = None                            # a vitdata.curriculum.schedule.Schedule (then no name/epochs/kwargs)


@dataclass
class DistributedConfig:
    """Rank and world size; None takes them from torch.distributed when it is initialised (else 0 / 1)."""
    rank: int | None = None
    world_size: int | None = None


@dataclass
class LoaderConfig:
    """Everything :func:`create_loader` needs. Checked when the loader is created."""
    data: str = ""                                  # ImageFolder dir | dir of .tar | "a-{000..009}.tar" | one .tar
    eval_data: str | None = None                    # deprecated alias of eval.data (DeprecationWarning)
    batch_size: int = 256                           # per rank
    image_size: int = 224                           # final output side (the schedule may vary it)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    backend: str = "auto"                           # auto (dali when importable) | dali | torch
    num_threads: int | None = None                  # DALI CPU threads (None: half this rank's cores, >= 2)
    num_workers: int | None = None                  # DALI source workers / DataLoader workers (None: from the
                                                    # cores this rank may use; see vitdata.loader.host)
    hw_decoder_load: float | None = None            # DALI mixed decoder's share of JPEGs on the hardware decoder
                                                    # (None: 0.65 on A100/H100/H200-class GPUs, else DALI's)
    prefetch: int = 2                               # batches prepared ahead (DALI queue depth)
    # Train: decode a plain JPEG at 1/2, 1/4 or 1/8 scale when its crop window stays >= the step's size across.
    # "auto": the torch backend does (Pillow decodes whole images, so the reduced IDCT saves ~15-20 %);
    # DALI keeps its own ROI decode, which on CPU cost less than the source's reduced decode on full-size
    # photos (Huffman decoding dominates them and the ROI decode stops below the window; nvJPEG on a GPU).
    # "on": also DALI on a CPU-only host (its source decodes those JPEGs); "off": full decodes everywhere.
    decode_scale: str = "auto"
    worker_start_timeout: float = 120.0             # s for DALI source workers to start (killed, retried once)
    # DALI: steps between the pipeline checkpoints kept for a state taken right after a step that failed in
    # the decoder was redone (vitdata.loader.backends.dali_redo): its resume replays at most this many steps;
    # a step that does not fail pays 1/checkpoint_every of one checkpoint (about 0.2 ms on a CPU, RandAugment).
    checkpoint_every: int = 8
    seed: int = 0                                   # order and augmentation seed
    on_error: str = "auto"                          # auto (skip for train, raise for eval) | skip | raise
    max_pixels: int = 64_000_000                    # per-image pixel budget, checked from the header
    verify_checksums: bool = False                  # CRC-32 of every sample checked against the index (built
                                                    # with checksums when missing); catches flipped bytes
    jpeg_warnings: str = "deliver"                  # a JPEG libjpeg decodes with a "Corrupt JPEG data" warning
                                                    # (reason corrupt_data): deliver (counted, Loader.warned()) |
                                                    # skip (substituted like a bad sample, Loader.skipped())
    check_png_data: bool = True                     # inflate each PNG's image data before the decoder sees it
    decode_levels: str | None = None                # train: folder of levels stores (vitdata.decode.levels, built by
                                                    # `vitdata levels`); a small step decodes a stored 1/2 or 1/4 copy
                                                    # (vitdata.data.pngdata): a PNG libpng refuses is a
                                                    # decode_error substitution, not a failed DALI step
    label_member: str = "cls"                       # tar shards: the member holding the label, cls | class |
                                                    # label | txt (an integer) | json:FIELD (a .json field)
    start_method: str = "auto"                      # worker start: auto (spawn with CUDA, else fork) | spawn | fork
    # The command-line option each field was set from (from_timm_args fills it: "schedule.epochs" ->
    # "--epochs"): configuration and state errors name these, so a user reads their own flags.
    flags: dict = field(default_factory=dict)

    @classmethod
    def from_timm_model(cls, model, **overrides) -> "LoaderConfig":
        """Size, mean, std, interpolation and crop_pct from ``timm.data.resolve_data_config(model=model)``.

        The size is the model's own input size (``patch_embed.img_size``) when it has one, since a model
        built with ``img_size=`` keeps its registry ``pretrained_cfg``; ``augment.patch_size`` is the
        model's patch size, so a curriculum never makes a size it cannot tile. ``overrides`` are top-level
        fields (``data=``, ``batch_size=`` ...). A nested section given as an override (``output=
        OutputConfig(dtype="bfloat16")``) is merged: its fields left at None keep the values taken from
        the model, and every field given wins, also one equal to the default (``OutputConfig(mean=
        IMAGENET_MEAN)`` keeps ImageNet's mean for a CLIP model).
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
                  augment=AugmentConfig(interpolation=interp if interp in INTERPOLATIONS else "bilinear",
                                        patch_size=patch or None),
                  output=OutputConfig(mean=tuple(float(x) for x in dc["mean"]), std=tuple(float(x) for x in dc["std"])),
                  eval=EvalConfig(crop_pct=float(dc.get("crop_pct", 0.875))))
        cfg = cfg.with_overrides(**overrides)
        check_model_sizes(cfg, model)
        return cfg

    def with_overrides(self, **overrides) -> "LoaderConfig":
        """A copy with top-level fields replaced. A nested section given (``output=OutputConfig(dtype=
        "bfloat16")``) is merged over this config's: its fields left at None keep this config's values, and
        every field given wins, also one equal to the default."""
        for name, value in overrides.items():
            base = getattr(self, name, None)
            if dataclasses.is_dataclass(base) and type(value) is type(base):
                given = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                         if getattr(value, f.name) is not None}
                overrides[name] = dataclasses.replace(base, **given)
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_timm_args(cls, args, model=None, **overrides) -> "LoaderConfig":
        """A config from timm ``train.py``'s argument namespace (and the model, for what args leave unset);
        see :mod:`vitdata.loader.timm_args` for the mapping and what becomes of the options vitdata does not run."""
        from vitdata.loader.timm_args import config_from_timm_args

        cfg = config_from_timm_args(cls, args, model, **overrides)
        try:        # now, while the user's flags are known (create_loader checks again with the real data)
            check_config(cfg, "train")
            check_schedule_layout(cfg)
            if model is not None:
                check_model_sizes(cfg, model)
        except ConfigError as e:
            raise e.named_as(cfg.flags) from None
        return cfg




def check_model_sizes(cfg: LoaderConfig, model) -> None:
    """Refuse, at build time, a schedule that changes the image size for a model that accepts one size only
    (a timm ViT built without ``dynamic_img_size=True`` fails at the first smaller batch)."""
    pe = getattr(model, "patch_embed", None)
    if pe is None or getattr(model, "dynamic_img_size", False) or not getattr(pe, "strict_img_size", False):
        return
    own = getattr(pe, "img_size", None)
    own = int(own[-1] if isinstance(own, (tuple, list)) else own) if own is not None else None
    if own is not None and own != cfg.image_size:
        raise ConfigError(f"image_size {cfg.image_size} but the model accepts {own} px only: build the model for "
                          f"that size (timm.create_model(..., img_size={cfg.image_size})) or make it dynamic "
                          f"(dynamic_img_size=True)", ("image_size", "model.dynamic_img_size"))
    sizes = scheduled_sizes(cfg)
    if sizes and sizes != {cfg.image_size}:
        raise ConfigError(f"the schedule {cfg.schedule.name!r} feeds image sizes {sorted(sizes)} but the model accepts "
                          f"{cfg.image_size} px only: create it with timm.create_model(..., dynamic_img_size=True) "
                          f"(or use a schedule that keeps the size)", ("schedule", "model.dynamic_img_size"))


def check_schedule_layout(cfg: LoaderConfig) -> None:
    """Lay the configured curriculum out once (one step per epoch) so a bad name, keyword or patch grid is
    refused at configuration time, naming its fields."""
    from vitdata.curriculum.named import make_schedule

    sc, a = cfg.schedule, cfg.augment
    if sc.schedule is not None:
        return
    kw = dict(sc.kwargs)
    patch = a.patch_size or (ERASE_CELL if cfg.image_size % ERASE_CELL == 0 else None)
    if patch:
        kw.setdefault("patch_size", patch)
    if sc.name == "constant":
        kw.setdefault("randaug_magnitude", 9.0 if a.randaug_magnitude is None else a.randaug_magnitude)
        kw.setdefault("randaug_num_ops", 2 if a.randaug_num_ops is None else a.randaug_num_ops)
    make_schedule(sc.name, sc.epochs or 1, 1, cfg.image_size, **kw)


def scheduled_sizes(cfg: LoaderConfig) -> set[int]:
    """Sizes of the batches the configured schedule makes over the run (after any low-pass crop; empty when
    it cannot be laid out yet)."""
    from vitdata.curriculum.schedule import Schedule
    from vitdata.curriculum.named import make_schedule

    sc = cfg.schedule
    try:
        if isinstance(sc.schedule, Schedule):
            sched = sc.schedule
        else:
            if sc.epochs is None and sc.name != "constant":
                return set()
            kw = dict(sc.kwargs)
            patch = cfg.augment.patch_size or (ERASE_CELL if cfg.image_size % ERASE_CELL == 0 else None)
            if patch:
                kw.setdefault("patch_size", patch)
            sched = make_schedule(sc.name, sc.epochs or 1, 4, cfg.image_size, **kw)
        knobs = [k for _, k in sched.epoch_table()] + [sched(e, 3) for e in range(sched.epochs)]
        return {int(k.lowpass_size or k.image_size) for k in knobs}   # the low-pass crop shrinks the batch
    except ConfigError:
        return set()     # check_config / create_loader report a bad schedule with its own fields


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except Exception:
        return False
    return True


def check_config(cfg: LoaderConfig, split: str) -> None:
    """Raise ConfigError naming the fields of the first bad combination found."""
    if split not in ("train", "eval"):
        raise ConfigError(f"split must be 'train' or 'eval', got {split!r}", ("split",))
    _check_data_and_sizes(cfg, split)
    _check_augment(cfg.augment)
    _check_output_and_eval(cfg)
    _check_runtime(cfg)
    _check_schedule(cfg)
    e = cfg.eval
    crop_pct = DEFAULT_CROP_PCT if e.crop_pct is None else e.crop_pct
    eval_size = e.image_size or cfg.image_size
    if split == "eval" and round(eval_size / crop_pct) < eval_size:
        _bad("eval crop larger than the resized image", "eval.image_size", "eval.crop_pct")


def _bad(msg: str, *fields: str):
    raise ConfigError(msg, fields)


def _check_data_and_sizes(cfg: LoaderConfig, split: str) -> None:
    if cfg.eval_data is not None and cfg.eval.data is not None and cfg.eval_data != cfg.eval.data:
        _bad("eval_data is a deprecated alias of eval.data and they differ; give eval=EvalConfig(data=...) only",
             "eval_data", "eval.data")
    if split == "eval" and cfg.eval.data == "":
        _bad("no evaluation data: eval.data is '' (the run has no validation split)", "eval.data")
    if not cfg.data and not (split == "eval" and (cfg.eval.data or cfg.eval_data)):
        _bad("no data source given", "data")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        _bad(f"batch_size must be a positive int, got {cfg.batch_size!r}", "batch_size")
    if not isinstance(cfg.image_size, int) or cfg.image_size < 8:
        _bad(f"image_size must be an int >= 8, got {cfg.image_size!r}", "image_size")


def _check_augment(a: AugmentConfig) -> None:
    if len(a.scale) != 2 or not 0 < a.scale[0] <= a.scale[1] <= 1:
        _bad(f"augment.scale must be (lo, hi) with 0 < lo <= hi <= 1, got {a.scale}", "augment.scale")
    if len(a.ratio) != 2 or not 0 < a.ratio[0] <= a.ratio[1]:
        _bad(f"augment.ratio must be (lo, hi) with 0 < lo <= hi, got {a.ratio}", "augment.ratio")
    if not 0 <= a.hflip <= 1:
        _bad(f"augment.hflip is a probability, got {a.hflip}", "augment.hflip")
    if a.randaug_magnitude is not None and not 0 <= a.randaug_magnitude <= 10:
        _bad(f"augment.randaug_magnitude is on timm's 0..10 scale, got {a.randaug_magnitude}",
             "augment.randaug_magnitude")
    if a.randaug_num_ops is not None and a.randaug_num_ops < 0:
        _bad("augment.randaug_num_ops must be >= 0", "augment.randaug_num_ops")
    if a.randaug_max_ops is not None and a.randaug_max_ops < max(1, a.randaug_num_ops or 0):
        _bad(f"augment.randaug_max_ops {a.randaug_max_ops} is below augment.randaug_num_ops {a.randaug_num_ops}",
             "augment.randaug_max_ops", "augment.randaug_num_ops")
    if a.interpolation is not None and a.interpolation not in INTERPOLATIONS:
        _bad(f"augment.interpolation must be one of {INTERPOLATIONS}, got {a.interpolation!r}", "augment.interpolation")
    if a.randaug_interpolation not in RANDAUG_INTERPOLATIONS:
        _bad(f"augment.randaug_interpolation must be one of {RANDAUG_INTERPOLATIONS}, got "
             f"{a.randaug_interpolation!r}", "augment.randaug_interpolation")
    if a.patch_size is not None and a.patch_size < 1:
        _bad("augment.patch_size must be >= 1", "augment.patch_size")


def _check_output_and_eval(cfg: LoaderConfig) -> None:
    o, e = cfg.output, cfg.eval
    if o.dtype not in DTYPES:
        _bad(f"output.dtype must be one of {tuple(DTYPES)}, got {o.dtype!r}", "output.dtype")
    if (o.mean is not None and len(o.mean) != 3) or (o.std is not None and (len(o.std) != 3 or min(o.std) <= 0)):
        _bad("output.mean and output.std need 3 values each, std > 0", "output.mean", "output.std")
    crop_pct = DEFAULT_CROP_PCT if e.crop_pct is None else e.crop_pct
    if not 0 < crop_pct <= 1:
        _bad(f"eval.crop_pct must lie in (0, 1], got {e.crop_pct}", "eval.crop_pct")


def _check_runtime(cfg: LoaderConfig) -> None:
    """Backend, workers, error policy, limits, seed and the label member."""
    if cfg.backend not in ("auto", "dali", "torch"):
        _bad(f"backend must be auto | dali | torch, got {cfg.backend!r}", "backend")
    if cfg.backend == "dali" and not dali_available():
        _bad("backend='dali' but nvidia.dali cannot be imported; install nvidia-dali or use backend='torch'", "backend")
    if ((cfg.num_workers is not None and cfg.num_workers < 0) or (cfg.num_threads is not None and cfg.num_threads < 1)
            or cfg.prefetch < 1):
        _bad("num_workers >= 0, num_threads >= 1 and prefetch >= 1 are required", "num_workers", "num_threads",
             "prefetch")
    if cfg.hw_decoder_load is not None and not 0 <= cfg.hw_decoder_load <= 1:
        _bad(f"hw_decoder_load is a fraction in [0, 1], got {cfg.hw_decoder_load}", "hw_decoder_load")
    if cfg.on_error not in ("auto", "skip", "raise"):
        _bad(f"on_error must be auto | skip | raise, got {cfg.on_error!r}", "on_error")
    if not cfg.worker_start_timeout > 0:
        _bad("worker_start_timeout must be > 0 seconds", "worker_start_timeout")
    if isinstance(cfg.checkpoint_every, bool) or not isinstance(cfg.checkpoint_every, int) or cfg.checkpoint_every < 1:
        _bad(f"checkpoint_every must be an int >= 1 (steps), got {cfg.checkpoint_every!r}", "checkpoint_every")
    if cfg.decode_scale not in DECODE_SCALE:
        _bad(f"decode_scale must be one of {DECODE_SCALE}, got {cfg.decode_scale!r}", "decode_scale")
    if cfg.max_pixels < 1:
        _bad("max_pixels must be >= 1", "max_pixels")
    if cfg.jpeg_warnings not in ("deliver", "skip"):
        _bad(f"jpeg_warnings must be deliver | skip, got {cfg.jpeg_warnings!r}", "jpeg_warnings")
    if not isinstance(cfg.check_png_data, bool):
        _bad(f"check_png_data must be True or False, got {cfg.check_png_data!r}", "check_png_data")
    if cfg.decode_levels is not None and not (isinstance(cfg.decode_levels, str) and cfg.decode_levels):
        _bad(f"decode_levels is a folder path or None, got {cfg.decode_levels!r}", "decode_levels")
    if cfg.start_method not in ("auto", "spawn", "fork"):
        _bad(f"start_method must be auto | spawn | fork, got {cfg.start_method!r}", "start_method")
    if cfg.seed < 0:
        _bad("seed must be >= 0", "seed")
    from vitdata.data.shards import parse_label_member

    try:
        parse_label_member(cfg.label_member)
    except ValueError as err:
        _bad(str(err), "label_member")


def _check_schedule(cfg: LoaderConfig) -> None:
    sc, a = cfg.schedule, cfg.augment
    if sc.schedule is not None and (sc.name != "constant" or sc.epochs is not None or sc.kwargs):
        _bad("schedule.schedule (a ready Schedule) is given with schedule.name, epochs or kwargs: give one or the "
             "other", "schedule.schedule", "schedule.name")
    constant = sc.schedule is None and sc.name == "constant"
    for knob in ("randaug_magnitude", "randaug_num_ops"):
        if not constant and getattr(a, knob) is not None:
            which = "a Schedule object" if sc.schedule is not None else repr(sc.name)
            _bad(f"augment.{knob} is given, but the schedule ({which}) sets RandAugment itself: leave "
                 f"augment.{knob} unset, or pass it to the schedule", f"augment.{knob}")
        if constant and knob in sc.kwargs:
            _bad(f"the constant schedule takes its RandAugment from augment.{knob}, not schedule.kwargs",
                 f"augment.{knob}", "schedule.kwargs")
    if sc.schedule is None and sc.epochs is None and sc.name != "constant":
        _bad(f"schedule {sc.name!r} is laid out over the run: give schedule.epochs (the run's epochs, e.g. "
             f"ScheduleConfig(name={sc.name!r}, epochs=300)); without it the curriculum would collapse into one "
             f"stage", "schedule.epochs")
    if sc.schedule is None and sc.epochs is not None and (not isinstance(sc.epochs, int) or sc.epochs < 1):
        _bad(f"schedule.epochs must be an int >= 1, got {sc.epochs!r}", "schedule.epochs")


def choose_backend(cfg: LoaderConfig) -> str:
    """``cfg.backend``, or for "auto" "dali" when DALI imports, else "torch"."""
    return cfg.backend if cfg.backend != "auto" else ("dali" if dali_available() else "torch")


def dist_rank_world(cfg: LoaderConfig) -> tuple[int, int]:
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




def graph_max_ops(a: AugmentConfig) -> int:
    """RandAugment op levels built into the DALI graph: ``randaug_max_ops``, else the constant schedule's ops
    (2 when unset; a scheduled run's ops are checked against it per epoch)."""
    return a.randaug_max_ops or max(1, 2 if a.randaug_num_ops is None else a.randaug_num_ops)


def resolve_defaults(cfg: LoaderConfig, backend: str) -> LoaderConfig:
    """A copy of a checked ``cfg`` with every "not set" (None) that has a default filled in: ImageNet's mean
    and std, bilinear resizing, crop_pct 0.875, ``eval.data`` from the deprecated ``eval_data``, and
    the constant schedule's RandAugment (magnitude 9, 2 ops; other schedules set their own),
    ``num_threads`` / ``num_workers`` from the cores this process may use, divided among the local ranks
    (:mod:`vitdata.loader.host`). ``augment.patch_size`` None becomes 16 when ``image_size`` is a multiple
    of 16 (scheduled sizes are rounded to it), else stays None (sizes are then not rounded); ``schedule.epochs``
    stays None for the constant schedule (one stage)."""
    from vitdata.loader.host import default_threads, default_workers

    if cfg.eval_data is not None:
        import warnings

        warnings.warn("LoaderConfig(eval_data=...) is deprecated: use eval=EvalConfig(data=...)", DeprecationWarning,
                      stacklevel=4)
    o, a, e = cfg.output, cfg.augment, cfg.eval
    constant = cfg.schedule.schedule is None and cfg.schedule.name == "constant"
    return dataclasses.replace(
        cfg, eval_data=None,
        eval=dataclasses.replace(e, data=e.data if e.data is not None else cfg.eval_data,
                                 crop_pct=DEFAULT_CROP_PCT if e.crop_pct is None else e.crop_pct),
        output=dataclasses.replace(o, mean=IMAGENET_MEAN if o.mean is None else tuple(o.mean),
                                   std=IMAGENET_STD if o.std is None else tuple(o.std)),
        augment=dataclasses.replace(a, interpolation=a.interpolation or "bilinear",
                                    randaug_magnitude=9.0 if constant and a.randaug_magnitude is None
                                    else a.randaug_magnitude,
                                    randaug_num_ops=2 if constant and a.randaug_num_ops is None else a.randaug_num_ops,
                                    patch_size=a.patch_size or (ERASE_CELL if cfg.image_size % ERASE_CELL == 0 else None)),
        num_threads=default_threads(backend) if cfg.num_threads is None else cfg.num_threads,
        num_workers=default_workers(backend) if cfg.num_workers is None else cfg.num_workers)
