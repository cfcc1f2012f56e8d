"""``vitdata train``'s options: the :class:`TrainConfig` fields (each one a command-line flag and a YAML key),
the recipe presets, and how a run's settings are merged and checked.

Precedence, lowest first: the defaults < a resumed run's config.json < ``--recipe`` < ``--config`` YAML
(or JSON) < the command line. :func:`check_train_config` refuses impossible combinations before any data is read.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from vitdata.errors import ConfigError
from vitdata.oracle.policies import POLICIES

DESCRIPTION = "vitdata train: a small timm ViT training loop in which every seed method is a switch."

# Presets, scaled to whatever --epochs says. Explicit options on the command line or in YAML win.
# EfficientTrain's stages need a patch grid fine enough to keep its 160/192/224 sides apart: the recipe keeps
# the run's patch where the grid already does (16 px at 112 px and above) and takes the largest smaller one
# that does otherwise (8 px at the default 64 px), saying so (parse_config); a patch given explicitly that
# merges the stages is refused (check_train_config).
RECIPE_SETTINGS = {
    "baseline": {},
    "efficienttrain": {"curriculum": "efficienttrain"},
    "1gpu24h": {"size_curriculum": True, "locality": True, "warmup_epochs": 0.0},
    "pss": {"pss": "cyclic", "pss_mode": "magnitude", "global_pool": "avg"},
    "data-centric": {"patch_erasing": 0.3, "oracle": "data-centric"},
    "drloc": {"drloc": 0.1},  # the released code's lambda for ViT-like models (T2T, CvT); 0.5 is Swin's
    # Ours, decided by the Imagenette time-to-accuracy record (README, "Time to accuracy"; 112 px, 30 epochs):
    # the measured best, the pipeline's growing image size with the locality feed-forward (0.30x and 0.35x
    # the baseline's time on two seeds; 0.23x on CIFAR-10). Its saving is the model's and the data's together:
    # the locality alone reaches the target at 0.45x, the growing size alone does not reach it.
    "vitdata": {"size_curriculum": True, "locality": True, "warmup_epochs": 0.0},
}
RECIPES = tuple(RECIPE_SETTINGS)


def _f(default, help, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # data
    data: Optional[str] = _f(None, "dataset root holding train/ and val/ (ImageFolder or tar shards)")
    train: Optional[str] = _f(None, "training split (overrides --data)")
    val: Optional[str] = _f(None, "validation split (overrides --data)")
    test: Optional[str] = _f(None, "test split, evaluated once at the end of the run (result.json test_*)")
    synthetic_samples: int = _f(10000, "size of the built-in synthetic dataset used when no data is given")
    backend: str = _f("auto", "loader backend", choices=("auto", "dali", "torch"))
    workers: int = _f(2, "loader source workers (0 = read in the loader's own thread) and DALI threads "
                         "(at least 1)")
    decode_levels: Optional[str] = _f(None, "folder of levels stores built by 'vitdata levels': small steps read "
                                            "the photos' stored 1/2, 1/4 and 1/8 copies")
    # model
    model: str = _f("vit_tiny_patch16_224", "timm ViT name (pretrained=False always)")
    patch_size: int = _f(16, "patch size (overrides the model name's)")
    depth: int = _f(4, "transformer blocks (0 = the model's own)")
    embed_dim: int = _f(0, "token width (0 = the model's own; then give --num-heads too)")
    num_heads: int = _f(0, "attention heads (0 = the model's own)")
    image_size: int = _f(64, "final training and evaluation image side in pixels")
    drop_path: float = _f(0.1, "stochastic depth rate")
    global_pool: str = _f("token", "classifier pooling", choices=("token", "avg"))
    # optimisation
    epochs: int = _f(6, "epochs")
    batch_size: int = _f(128, "batch size per process")
    lr: float = _f(2e-3, "peak learning rate (AdamW)")
    min_lr: float = _f(1e-5, "final learning rate of the cosine")
    weight_decay: float = _f(0.05, "AdamW weight decay (not on norms, biases, embeddings)")
    warmup_epochs: float = _f(1.0, "linear warm-up, in epochs")
    cosine_span: float = _f(1.0, "share of its cosine the run covers: 1 decays to --min-lr at the run's end; "
                                 "below 1 the cosine is declared over (epochs - warm-up) / span and cut at the "
                                 "run's end, as the 1-GPU/24-hour paper's 300 + 10-epoch cosine was cut by its "
                                 "24-hour budget (LR still 0.8-0.96 of peak at the stop: a span of 0.13-0.3)")
    label_smoothing: float = _f(0.1, "label smoothing")
    mixup: float = _f(0.0, "Mixup alpha (0 = off)")
    cutmix: float = _f(0.0, "CutMix alpha (0 = off)")
    oracle_mixing: bool = _f(False, "the data-centric oracle sets the share of batches Mixup/CutMix mixes each "
                                    "epoch to its strength (0 in formation; an UNCONFIRMED reading of the paper)")
    crop_scale: float = _f(0.25, "smallest area fraction of the random-resized crop")
    randaug_magnitude: float = _f(5.0, "RandAugment magnitude when no curriculum sets it (0..10)")
    ema: float = _f(0.0, "model EMA decay (0 = off), e.g. 0.9998")
    clip_grad: float = _f(1.0, "gradient norm clip (0 = off)")
    amp: str = _f("auto", "autocast dtype", choices=("auto", "bf16", "fp16", "off"))
    # methods (see docs/methods.md)
    recipe: Optional[str] = _f(None, "preset combining the switches as each paper did", choices=RECIPES)
    curriculum: Optional[str] = _f(None, "data curriculum: EfficientTrain low-pass + RandAug schedule",
                                   choices=("efficienttrain", "efficienttrain++"))
    curriculum_magnitude: str = _f("paper", "EfficientTrain's RandAugment magnitudes: the paper's 1..9, or scaled "
                                            "to end at --randaug-magnitude (run)", choices=("paper", "run"))
    curriculum_augment_at: str = _f("full", "efficienttrain++: crop and augment at full size, then a Lanczos resize of "
                                            "the batch to the segment's side (full, the released order), or crop "
                                            "straight to that side (stage)", choices=("full", "stage"))
    size_curriculum: bool = _f(False, "progressive image size (1-GPU/24 h paper)")
    size_epoch_step: int = _f(0, "epochs per size of --size-curriculum (0 = the paper's 5, fewer when the run "
                                 "is too short for every size to get 5; the last size is always trained on)")
    locality: bool = _f(False, "LocalViT* inverted-residual feed-forward in every block")
    pss: Optional[str] = _f(None, "patch sampling schedule", choices=("cyclic", "linear", "cosine"))
    pss_mode: str = _f("magnitude", "PSS token choice", choices=("magnitude", "random"))
    patch_erasing: float = _f(0.0, "PatchErasing ratio of patches (0 = off)")
    oracle: Optional[str] = _f(None, "difficulty oracle policy", choices=tuple(POLICIES))
    drloc: float = _f(0.0, "DRLoc loss weight lambda (0 = off; the released code: 0.1 for ViT-like models)")
    drloc_target: str = _f("abs", "DRLoc offset target (abs: released code; normalized: the paper)",
                           choices=("abs", "normalized"))
    drloc_tokens: str = _f("pre-norm", "DRLoc tokens: before (released code) or after the final LayerNorm",
                           choices=("pre-norm", "post-norm"))
    drloc_schedule: str = _f("released", "DRLoc lambda over epochs (released: ramp, then a decay that never "
                                         "reaches 0; ramp-decay: to 0 at the end)",
                             choices=("released", "ramp-decay", "constant"))
    # run
    out: Optional[str] = _f(None, "run directory (default runs/<time>)")
    eval_every: int = _f(1, "evaluate every N epochs (and at the end)")
    ckpt_every: int = _f(0, "checkpoint every N steps (0 = at epoch ends only)")
    log_every: int = _f(10, "log every N steps")
    max_steps: int = _f(0, "stop (with a checkpoint) after this many steps in total (0 = run all epochs)")
    resume: Optional[str] = _f(None, "resume from a run directory or its checkpoint directory")
    fresh_loader: bool = _f(False, "with --resume: keep the model, optimiser, EMA and step count but not the loader's "
                                   "position or the oracle's table; start at the next epoch (after the training "
                                   "files changed)")
    strict_eval: bool = _f(False, "a validation file that cannot be read, decoded or labelled ends the run (after "
                                  "the checkpoint); default: it is skipped and counted (result.json val_skipped)")
    seed: int = _f(0, "random seed")
    device: str = _f("auto", "auto | cpu | cuda")
    dist_timeout: float = _f(600.0, "seconds a collective waits for the other ranks before the run fails "
                                    "(a hung or dead rank)")
    progress: bool = _f(True, "progress bar on the terminal")
    report: bool = _f(True, "write the report folder at the end")
    config: Optional[str] = _f(None, "YAML file of options, or JSON when it ends in .json (command-line options win)")


def _read_config_file(path: str) -> dict:
    """The options of a ``--config`` file: YAML (needs pyyaml), or JSON when the name ends in ``.json``
    (standard library). ConfigError naming ``config`` for a missing pyyaml or a file that is not a mapping."""
    from vitdata.optional import install_hint, optional_import

    with open(path) as fh:
        text = fh.read()
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"--config {path}: not valid JSON ({e})", ("config",)) from e
    else:
        yaml = optional_import("yaml")
        if yaml is None:
            raise ConfigError(f"--config {path}: reading YAML needs pyyaml, which is not installed; install it with "
                              f"{install_hint('yaml')}, or give the options as a .json file", ("config",))
        data = yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values, got "
                          f"{type(data).__name__}", ("config",))
    return data


def parse_config(argv=None, prog="vitdata train") -> TrainConfig:
    """Defaults < the resumed run's config.json < --recipe preset < --config YAML < command-line options."""
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kw = {"help": f"{f.metadata['help']} (default: {getattr(defaults, f.name)})", "dest": f.name,
              "default": argparse.SUPPRESS}
        if f.type in ("bool", bool):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            kw["type"], kw["choices"] = kind, f.metadata.get("choices")
        p.add_argument(flag, **kw)
    given = vars(p.parse_args(argv))
    from_yaml = {}
    if given.get("config"):
        from_yaml = {k.replace("-", "_"): v for k, v in _read_config_file(given["config"]).items()}
        unknown = set(from_yaml) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ConfigError(f"unknown options in {given['config']}: {sorted(unknown)}", tuple(sorted(unknown)))
    recipe = given.get("recipe", from_yaml.get("recipe"))
    if recipe is not None and recipe not in RECIPE_SETTINGS:
        raise ConfigError(f"unknown recipe {recipe!r}; choose from {RECIPES}", ("recipe",))
    saved = {}
    if given.get("resume"):  # a resumed run keeps its own settings unless told otherwise
        path = os.path.join(resumed_run_dir(given["resume"]), "config.json")
        if os.path.isfile(path):
            # Not "out": a copied run's config.json names the folder it was copied from, and the resumed
            # run writes where it was resumed from (or where --out says), never there.
            with open(path) as fh:
                saved = {k: v for k, v in json.load(fh).items()
                         if k not in ("max_steps", "resume", "config", "out", "fresh_loader") and hasattr(defaults, k)}
    merged = {**saved, **RECIPE_SETTINGS.get(recipe, {}), **from_yaml, **given}
    cfg = dataclasses.replace(defaults, **merged)
    if recipe == "efficienttrain" and "patch_size" not in {**saved, **from_yaml, **given}:
        cfg = _recipe_patch(cfg)
    return cfg


def _recipe_patch(cfg: TrainConfig) -> TrainConfig:
    """The efficienttrain recipe's patch: the run's own where its grid keeps the stages apart, else the
    largest smaller patch that does (named on stderr, since it changes the model's token count)."""
    from vitdata.curriculum.named import ET_SIZES_224, patch_keeping_stages

    patch = patch_keeping_stages(ET_SIZES_224, cfg.image_size, cfg.patch_size)
    if patch is None or patch == cfg.patch_size:
        return cfg                              # kept, or left for check_train_config to refuse with a hint
    print(f"vitdata train: recipe efficienttrain uses --patch-size {patch}: at --image-size {cfg.image_size} the "
          f"{cfg.patch_size}-px grid merges its stages", file=sys.stderr)
    return dataclasses.replace(cfg, patch_size=patch)


def check_train_config(cfg: TrainConfig) -> None:
    """Refuse bad combinations before any data is read (ConfigError naming the options)."""
    if cfg.locality and cfg.pss:
        raise ConfigError("--locality and --pss cannot be combined: the locality feed-forward convolves the full "
                          "token grid, which PSS token selection removes", ("locality", "pss"))
    if cfg.image_size % cfg.patch_size:
        raise ConfigError(f"--image-size {cfg.image_size} is not a multiple of --patch-size {cfg.patch_size}",
                          ("image_size", "patch_size"))
    if cfg.curriculum_magnitude == "run" and cfg.curriculum != "efficienttrain":
        raise ConfigError("--curriculum-magnitude run scales EfficientTrain's magnitudes; it needs --curriculum "
                          "efficienttrain", ("curriculum_magnitude", "curriculum"))
    if cfg.curriculum_augment_at != "full" and cfg.curriculum != "efficienttrain++":
        raise ConfigError("--curriculum-augment-at applies to --curriculum efficienttrain++ (efficienttrain "
                          "crops in the Fourier domain after augmenting at full size)",
                          ("curriculum_augment_at", "curriculum"))
    if cfg.curriculum:  # a patch grid that merges EfficientTrain's stages is refused, naming a fix
        from vitdata.curriculum.named import ET_SIZES_224, ETPP_SIZES_224, check_stages_kept
        sizes = ET_SIZES_224 if cfg.curriculum == "efficienttrain" else ETPP_SIZES_224
        try:
            check_stages_kept(cfg.curriculum, sizes, cfg.image_size, cfg.patch_size)
        except ConfigError as e:
            raise e.named_as({"image_size": "--image-size", "patch_size": "--patch-size"}) from None
    if not 0.0 < cfg.cosine_span <= 1.0:
        raise ConfigError(f"--cosine-span must be in (0, 1], got {cfg.cosine_span}", ("cosine_span",))
    if cfg.cosine_span < 1.0 and cfg.curriculum == "efficienttrain++":
        raise ConfigError("--cosine-span applies to the step-indexed cosine; efficienttrain++ indexes its learning "
                          "rate by compute", ("cosine_span", "curriculum"))
    if cfg.size_epoch_step < 0:
        raise ConfigError("--size-epoch-step must be >= 0 (0 = default)", ("size_epoch_step",))
    if cfg.oracle_mixing and (cfg.oracle != "data-centric" or not (cfg.mixup > 0 or cfg.cutmix > 0)):
        raise ConfigError("--oracle-mixing needs --oracle data-centric and --mixup or --cutmix > 0 (it sets the share "
                          "of batches they mix)", ("oracle_mixing", "oracle", "mixup", "cutmix"))
    if cfg.mixup > 0 or cfg.cutmix > 0:
        if cfg.batch_size % 2:
            raise ConfigError("Mixup/CutMix need an even --batch-size", ("batch_size", "mixup", "cutmix"))
    for name in ("drloc", "patch_erasing", "mixup", "cutmix", "ema", "clip_grad", "label_smoothing"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0", (name,))
    if not cfg.dist_timeout > 0:
        raise ConfigError(f"--dist-timeout must be > 0 seconds, got {cfg.dist_timeout}", ("dist_timeout",))
    if cfg.patch_erasing > 1 or cfg.ema >= 1:
        raise ConfigError("--patch-erasing must be <= 1 and --ema < 1", ("patch_erasing", "ema"))
    if cfg.fresh_loader and not cfg.resume:
        raise ConfigError("--fresh-loader applies to a resumed run; give --resume too", ("fresh_loader", "resume"))
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.eval_every < 1 or cfg.log_every < 1:
        raise ConfigError("--epochs, --batch-size, --eval-every and --log-every must be >= 1",
                          ("epochs", "batch_size", "eval_every", "log_every"))


def resumed_run_dir(resume: str) -> str:
    """The run folder of ``--resume PATH`` (PATH is the run folder or its checkpoint/ folder)."""
    return resume.rstrip("/").removesuffix("/checkpoint")
