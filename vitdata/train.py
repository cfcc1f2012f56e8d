"""``vitdata train``: a small timm ViT training loop in which every seed method is a switch.

Read top to bottom: config -> distributed setup -> data (loader, schedule, oracle) -> model, optimiser,
EMA, Mixup -> resume -> the loop (one step: fetch, knobs, mix, forward, per-sample loss, report, backward,
step, log) -> evaluation -> checkpoint -> report.

With no data argument it trains on the built-in synthetic dataset (generated once into the vitdata
cache), on CPU in a few minutes. ``torchrun --nproc-per-node K -m vitdata train ...`` runs DDP (NCCL on
GPU, gloo on CPU). A rank that hangs (a stalled read) or dies leaves the others waiting in a collective;
``--dist-timeout`` (seconds, default 600) bounds that wait: the waiting ranks then fail with the process
group's timeout error instead of blocking for gloo's default 30 minutes.

Timing: ``data_ms`` is the time spent waiting for the loader's next batch; ``step_ms`` is the rest of the
step (mixing, forward, backward, optimiser). On CUDA the step ends with a deliberate
``torch.cuda.synchronize()`` so the two do not blur into each other.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from vitdata.errors import ConfigError
from vitdata.io import atomic_write

RECIPES = ("baseline", "efficienttrain", "1gpu24h", "pss", "data-centric", "drloc", "vitdata")


def _f(default, help, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # data
    data: Optional[str] = _f(None, "dataset root holding train/ and val/ (ImageFolder or tar shards)")
    train: Optional[str] = _f(None, "training split (overrides --data)")
    val: Optional[str] = _f(None, "validation split (overrides --data)")
    synthetic_samples: int = _f(10000, "size of the built-in synthetic dataset used when no data is given")
    backend: str = _f("auto", "loader backend", choices=("auto", "dali", "torch"))
    workers: int = _f(2, "loader threads / processes")
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
    label_smoothing: float = _f(0.1, "label smoothing")
    mixup: float = _f(0.0, "Mixup alpha (0 = off)")
    cutmix: float = _f(0.0, "CutMix alpha (0 = off)")
    crop_scale: float = _f(0.25, "smallest area fraction of the random-resized crop")
    randaug_magnitude: float = _f(5.0, "RandAugment magnitude when no curriculum sets it (0..10)")
    ema: float = _f(0.0, "model EMA decay (0 = off), e.g. 0.9998")
    clip_grad: float = _f(1.0, "gradient norm clip (0 = off)")
    amp: str = _f("auto", "autocast dtype", choices=("auto", "bf16", "fp16", "off"))
    # methods (see ../shared/METHODS.md)
    recipe: Optional[str] = _f(None, "preset combining the switches as each paper did", choices=RECIPES)
    curriculum: Optional[str] = _f(None, "data curriculum: EfficientTrain low-pass + RandAug schedule",
                                   choices=("efficienttrain", "efficienttrain++"))
    size_curriculum: bool = _f(False, "progressive image size (1-GPU/24 h paper)")
    locality: bool = _f(False, "LocalViT* inverted-residual feed-forward in every block")
    pss: Optional[str] = _f(None, "patch sampling schedule", choices=("cyclic", "linear", "cosine"))
    pss_mode: str = _f("magnitude", "PSS token choice", choices=("magnitude", "random"))
    patch_erasing: float = _f(0.0, "PatchErasing ratio of patches (0 = off)")
    oracle: Optional[str] = _f(None, "difficulty oracle policy",
                               choices=("uniform", "data-centric", "prune-easy", "weighted"))
    drloc: float = _f(0.0, "DRLoc loss weight lambda (0 = off)")
    drloc_target: str = _f("normalized", "DRLoc offset target", choices=("normalized", "abs"))
    drloc_schedule: str = _f("ramp-decay", "DRLoc lambda over epochs", choices=("ramp-decay", "constant"))
    # run
    out: Optional[str] = _f(None, "run directory (default runs/<time>)")
    eval_every: int = _f(1, "evaluate every N epochs (and at the end)")
    ckpt_every: int = _f(0, "checkpoint every N steps (0 = at epoch ends only)")
    log_every: int = _f(10, "log every N steps")
    max_steps: int = _f(0, "stop (with a checkpoint) after this many steps in total (0 = run all epochs)")
    resume: Optional[str] = _f(None, "resume from a run directory or its checkpoint directory")
    seed: int = _f(0, "random seed")
    device: str = _f("auto", "auto | cpu | cuda")
    dist_timeout: float = _f(600.0, "seconds a collective waits for the other ranks before the run fails "
                                    "(a hung or dead rank)")
    progress: bool = _f(True, "progress bar on the terminal")
    report: bool = _f(True, "write the report folder at the end")
    config: Optional[str] = _f(None, "YAML file of options (command-line options win)")


# Presets, scaled to whatever --epochs says. Explicit options on the command line or in YAML win.
RECIPE_SETTINGS = {
    "baseline": {},
    "efficienttrain": {"curriculum": "efficienttrain"},
    "1gpu24h": {"size_curriculum": True, "locality": True, "warmup_epochs": 0.0},
    "pss": {"pss": "cyclic", "pss_mode": "magnitude", "global_pool": "avg"},
    "data-centric": {"patch_erasing": 0.3, "oracle": "data-centric"},
    "drloc": {"drloc": 0.5},
    # Our combination (provisional until the CIFAR-10 benchmark decides): data-side low-pass curriculum,
    # cheap token schedule, difficulty-aware sampling.
    "vitdata": {"curriculum": "efficienttrain", "pss": "cyclic", "oracle": "data-centric"},
}


def parse_config(argv=None, prog="vitdata train") -> TrainConfig:
    """Defaults < the resumed run's config.json < --recipe preset < --config YAML < command-line options."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
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
        import yaml
        with open(given["config"]) as fh:
            from_yaml = {k.replace("-", "_"): v for k, v in (yaml.safe_load(fh) or {}).items()}
        unknown = set(from_yaml) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ConfigError(f"unknown options in {given['config']}: {sorted(unknown)}", tuple(sorted(unknown)))
    recipe = given.get("recipe", from_yaml.get("recipe"))
    if recipe is not None and recipe not in RECIPE_SETTINGS:
        raise ConfigError(f"unknown recipe {recipe!r}; choose from {RECIPES}", ("recipe",))
    saved = {}
    if given.get("resume"):  # a resumed run keeps its own settings unless told otherwise
        path = os.path.join(given["resume"].rstrip("/").removesuffix("/checkpoint"), "config.json")
        if os.path.isfile(path):
            with open(path) as fh:
                saved = {k: v for k, v in json.load(fh).items()
                         if k not in ("max_steps", "resume", "config") and hasattr(defaults, k)}
    merged = {**saved, **RECIPE_SETTINGS.get(recipe, {}), **from_yaml, **given}
    return dataclasses.replace(defaults, **merged)


def check_config(cfg: TrainConfig) -> None:
    """Refuse bad combinations before any data is read (ConfigError naming the options)."""
    if cfg.locality and cfg.pss:
        raise ConfigError("--locality and --pss cannot be combined: the locality feed-forward convolves the full "
                          "token grid, which PSS token selection removes", ("locality", "pss"))
    if cfg.image_size % cfg.patch_size:
        raise ConfigError(f"--image-size {cfg.image_size} is not a multiple of --patch-size {cfg.patch_size}",
                          ("image_size", "patch_size"))
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
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.eval_every < 1 or cfg.log_every < 1:
        raise ConfigError("--epochs, --batch-size, --eval-every and --log-every must be >= 1",
                          ("epochs", "batch_size", "eval_every", "log_every"))


# ----------------------------------------------------------------------------------------------------
# Small helpers used by the loop


def setup_distributed(cfg: TrainConfig):
    """(rank, world_size, device). torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; NCCL on GPU, gloo on CPU."""
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if want_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo", timeout=datetime.timedelta(seconds=cfg.dist_timeout))
    return rank, world, device


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine to ``floor`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * t))


def per_sample_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """(B,) float32 losses. Hard labels (B,): cross-entropy with label smoothing. Soft targets (B, C) from
    Mixup/CutMix (smoothing already folded in): the per-sample form of timm's SoftTargetCrossEntropy."""
    logits = logits.float()
    if target.ndim == 2:
        return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing, reduction="none")


def build_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """The curriculum knobs (image size, low-pass size, RandAug magnitude, erase ratio, PSS keep ratio)."""
    from vitdata.schedules import combine, make_schedule
    extra = {"patch_size": cfg.patch_size, "erase_ratio": cfg.patch_erasing}
    if cfg.pss:
        extra["pss"] = cfg.pss
    name = cfg.curriculum or "constant"
    if name == "constant":
        extra["randaug_magnitude"] = cfg.randaug_magnitude
    sched = make_schedule(name, cfg.epochs, steps_per_epoch, cfg.image_size, **extra)
    if cfg.size_curriculum:
        # The paper grows the crop by 2 patches from 2 patches (32 -> 224 px at patch 16).
        sizes = make_schedule("progressive-size", cfg.epochs, steps_per_epoch, cfg.image_size,
                              init_size=min(2 * cfg.patch_size, cfg.image_size), step_px=2 * cfg.patch_size,
                              patch_size=cfg.patch_size)
        sched = combine(sched, image_size=sizes)
    return sched


def resolve_data(cfg: TrainConfig, rank: int) -> tuple[str, str]:
    """(train source, val source). Without data arguments, the synthetic dataset in the vitdata cache
    (written by rank 0; the other ranks wait at a barrier)."""
    if cfg.train or cfg.data:
        train = cfg.train or os.path.join(cfg.data, "train")
        val = cfg.val or (os.path.join(cfg.data, "val") if cfg.data else None)
        if val is None:
            raise ConfigError("--train needs --val (or give --data ROOT with ROOT/train and ROOT/val)", ("val",))
        return train, val
    from vitdata.datasets import synthetic
    root = synthetic.default_root(n=cfg.synthetic_samples)
    if rank == 0:
        synthetic.generate(root, num_samples=cfg.synthetic_samples)
    if dist.is_initialized():
        dist.barrier()
    return os.path.join(root, "train"), os.path.join(root, "val")


def build_loaders(cfg: TrainConfig, train_src: str, val_src: str, rank: int, world: int, device, oracle_factory):
    """The train and eval loaders (vitdata.loader), the schedule, the oracle (or None) and the index."""
    from vitdata.index import open_index
    from vitdata.loader import (AugmentConfig, DistributedConfig, LoaderConfig, OutputConfig, ScheduleConfig,
                                create_loader)
    index = open_index(train_src)
    steps_per_epoch = len(index) // (cfg.batch_size * world)
    if steps_per_epoch < 1:
        raise ConfigError(f"{len(index)} training samples is less than one step of {cfg.batch_size} x {world}",
                          ("batch_size",))
    sched = build_schedule(cfg, steps_per_epoch)
    oracle = oracle_factory(len(index)) if cfg.oracle else None
    lcfg = LoaderConfig(data=train_src, eval_data=val_src, batch_size=cfg.batch_size, image_size=cfg.image_size,
                        augment=AugmentConfig(scale=(cfg.crop_scale, 1.0), randaug_magnitude=cfg.randaug_magnitude,
                                              patch_size=cfg.patch_size),
                        output=OutputConfig(device=str(device)), schedule=ScheduleConfig(schedule=sched),
                        distributed=DistributedConfig(rank=rank, world_size=world), backend=cfg.backend,
                        num_threads=cfg.workers, num_workers=cfg.workers, seed=cfg.seed)
    train = create_loader(lcfg, split="train", oracle=oracle)
    val = create_loader(lcfg, split="eval")
    return train, val, sched, oracle, index


def unpack(out):
    """Model output -> (logits, DRLoc loss or None); the model returns a pair in training with DRLoc."""
    return out if isinstance(out, tuple) else (out, None)


@torch.no_grad()
def evaluate(model, loader, device, amp_ctx) -> dict:
    """Top-1/top-5 (%) and mean loss over the validation split, summed across ranks (padding ids < 0 skipped)."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss, count
    for batch in loader:
        with amp_ctx():
            logits = model(batch.images)
        logits, labels = logits.float(), batch.labels.long()
        valid = batch.ids >= 0
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top5 == labels[:, None]
        sums[0] += (hit[:, 0] & valid).sum()
        sums[1] += (hit.any(1) & valid).sum()
        sums[2] += (F.cross_entropy(logits, labels, reduction="none") * valid).sum()
        sums[3] += valid.sum()
    if dist.is_initialized():
        dist.all_reduce(sums)
    model.train()
    n = max(1.0, sums[3].item())
    return {"top1": 100 * sums[0].item() / n, "top5": 100 * sums[1].item() / n, "loss": sums[2].item() / n,
            "count": int(n)}


class Logger:
    """JSONL always (rank 0), TensorBoard when importable, a tqdm bar when asked."""

    def __init__(self, out_dir: str, rank: int, total_steps: int, progress: bool, start_step: int = 0,
                 resume_time: float | None = None):
        self.rank = rank
        self.path = os.path.join(out_dir, "log.jsonl")
        if rank == 0 and resume_time is not None and os.path.exists(self.path):
            # A killed run may have logged past its last checkpoint: drop those records, they are redone.
            with open(self.path) as fh:
                keep = [line for line in fh if _record_time(line) <= resume_time]
            atomic_write(self.path, "".join(keep).encode())
        self.file = open(self.path, "a") if rank == 0 else None
        self.tb = self.bar = None
        if rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(out_dir, "tb"))
            except Exception:  # tensorboard not installed
                self.tb = None
            if progress:
                from tqdm import tqdm
                self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, file=sys.stderr)

    def write(self, kind: str, **rec):
        if self.file is None:
            return
        self.file.write(json.dumps({"kind": kind, **rec}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("step",):
                    self.tb.add_scalar(f"{kind}/{k}", v, rec.get("step", 0))

    def progress(self, n: int, **postfix):
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def message(self, text: str):
        if self.rank == 0:
            (self.bar.write if self.bar is not None else print)(text)

    def close(self):
        for h in (self.bar, self.tb, self.file):
            if h is not None:
                h.close()


def _record_time(line: str) -> float:
    try:
        return float(json.loads(line).get("time", 0.0))
    except ValueError:  # a torn last line
        return float("inf")


def log_oracle(log: Logger, oracle, epoch: int, elapsed: float) -> None:
    """Write the oracle's metrics of ``epoch`` (DDP-e/h, KAR, period) once they exist."""
    if oracle is None or epoch < 0:
        return
    m = next((m for m in oracle.metrics if m.get("epoch") == epoch), None)
    if m is not None:
        log.write("epoch", epoch=epoch + 1, time=elapsed,
                  oracle={k: m.get(k) for k in ("ddp_e", "ddp_h", "kar", "period", "histogram")})


def rng_state() -> dict:
    """Every generator the step draws from: torch (dropout, drop-path, PSS random, DRLoc pairs) and NumPy
    (timm Mixup)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": {"keys": np_state[1], "pos": int(np_state[2]),
                                                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"], n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def find_checkpoint(path: str) -> str:
    from vitdata import checkpoint
    for d in (path, os.path.join(path, "checkpoint")):
        if checkpoint.exists(d):
            return d
    raise ConfigError(f"no checkpoint under {path} (looked for manifest.json and checkpoint/manifest.json)",
                      ("resume",))


# ----------------------------------------------------------------------------------------------------
# The run


def train(cfg: TrainConfig) -> dict:
    from timm.data import Mixup
    from timm.optim import param_groups_weight_decay
    from timm.utils import ModelEmaV3

    from vitdata import checkpoint
    from vitdata.models import create_vit, drloc_lambda
    from vitdata.oracle import DifficultyOracle

    check_config(cfg)
    rank, world, device = setup_distributed(cfg)
    if cfg.resume and not cfg.out:
        cfg.out = cfg.resume.rstrip("/").removesuffix("/checkpoint")
    out_dir = cfg.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    ckpt_dir = os.path.join(out_dir, "checkpoint")
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.json"), "w") as fh:
            json.dump(dataclasses.asdict(cfg), fh, indent=1)
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)

    # ---- data: loader, curriculum schedule, difficulty oracle
    train_src, val_src = resolve_data(cfg, rank)
    make_oracle = lambda n: DifficultyOracle(n, cfg.oracle, device=device, seed=cfg.seed)  # noqa: E731
    train_loader, val_loader, sched, oracle, index = build_loaders(cfg, train_src, val_src, rank, world, device,
                                                                   make_oracle)
    num_classes = index.num_classes
    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch

    # ---- model, optimiser, EMA, Mixup/CutMix
    timm_kw = dict(patch_size=cfg.patch_size, drop_path_rate=cfg.drop_path, global_pool=cfg.global_pool)
    for name in ("depth", "embed_dim", "num_heads"):
        if getattr(cfg, name):
            timm_kw[name] = getattr(cfg, name)
    model = create_vit(cfg.model, num_classes=num_classes, img_size=cfg.image_size, locality=cfg.locality,
                       pss=cfg.pss_mode if cfg.pss else None, drloc=cfg.drloc > 0, drloc_target=cfg.drloc_target,
                       **timm_kw).to(device)
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    ema = ModelEmaV3(model, decay=cfg.ema) if cfg.ema > 0 else None
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                              else None)
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                      num_classes=num_classes)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None,
                 "auto": torch.bfloat16 if device.type == "cuda" else None}[cfg.amp]

    def amp_ctx():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))

    # ---- resume: model, optimiser, scaler, EMA, loader (its position inside the epoch), oracle, RNGs
    step, start_epoch, wall0 = 0, 0, 0.0
    if cfg.resume:
        state = checkpoint.load(find_checkpoint(cfg.resume))
        if state["world_size"] != world:
            raise ConfigError(f"checkpoint was written by {state['world_size']} processes, this run has {world}",
                              ("resume",))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        train_loader.load_state_dict(dict(state["loader"][rank], oracle=state.get("oracle")))
        set_rng_state(state["rng"][rank])
        step, start_epoch, wall0 = state["step"], state["epoch"], state["time"]

    def save_checkpoint(epoch: int, elapsed: float):
        # Collectives first (oracle folding inside the loader's state, RNG gather), on every rank; then
        # rank 0 writes. The oracle's table is identical on every rank: store it once, not per rank.
        loader_state = train_loader.state_dict()
        oracle_state = loader_state.pop("oracle", None)
        rngs, loaders = [rng_state()], [loader_state]
        if world > 1:  # per-rank pieces: RNG streams and loader positions
            rngs, loaders = [None] * world, [None] * world
            dist.all_gather_object(rngs, rng_state())
            dist.all_gather_object(loaders, loader_state)
        if rank == 0:
            checkpoint.save(ckpt_dir, {
                "step": step, "epoch": epoch, "time": elapsed, "config": dataclasses.asdict(cfg),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "scheduler": {"step": step, "total": total_steps, "warmup": warmup_steps},
                "ema": ema.module.state_dict() if ema is not None else None,
                "loader": loaders, "oracle": oracle_state, "rng": rngs, "world_size": world}, step)
        if world > 1:
            dist.barrier()

    log = Logger(out_dir, rank, total_steps, cfg.progress and sys.stderr.isatty(), start_step=step,
                 resume_time=wall0 if cfg.resume else None)
    log.message(f"vitdata train: {cfg.model} depth={cfg.depth or 'default'} patch={cfg.patch_size} "
                f"{num_classes} classes, {len(index)} train samples, {steps_per_epoch} steps/epoch x {cfg.epochs} "
                f"epochs, world={world}, device={device}, schedule={sched.name}, out={out_dir}")
    samples = []  # (label, images) as the model saw them, a few epochs, for the report
    sample_epochs = sorted({0, cfg.epochs // 3, (2 * cfg.epochs) // 3, cfg.epochs - 1})
    last_eval = {}
    t_start = time.perf_counter() - wall0
    stop, epoch, epoch_done = False, start_epoch - 1, True

    # ---- the loop
    for epoch in range(start_epoch, cfg.epochs):
        train_loader.set_epoch(epoch)  # with an oracle: folds epoch - 1's reports and plans this epoch
        log_oracle(log, oracle, epoch - 1, time.perf_counter() - t_start)
        lam_drloc = drloc_lambda(cfg.drloc, epoch, cfg.epochs, warmup_epochs=cfg.epochs / 15,
                                 schedule=cfg.drloc_schedule) if cfg.drloc > 0 else 0.0
        model.train()
        # Steps of this epoch (a pruning plan can shorten it) and where it starts (mid-epoch on resume).
        n_steps, first = len(train_loader), getattr(train_loader, "position", 0)
        epoch_done = False
        t_ready = time.perf_counter()
        for i, batch in enumerate(train_loader, start=first):
            epoch_done = i + 1 == n_steps
            t_batch = time.perf_counter()
            data_ms = 1000 * (t_batch - t_ready)
            lr = lr_at(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            knobs = batch.knobs
            if cfg.pss:
                model.set_keep_ratio(knobs.keep_ratio)
            images, target = batch.images, batch.labels
            if rank == 0 and epoch in sample_epochs and not any(s[0] == f"epoch {epoch}" for s in samples):
                samples.append((f"epoch {epoch}", images[:8].detach().float().cpu()))
            if mixup is not None:
                images, target = mixup(images, target)

            with amp_ctx():
                logits, aux = unpack(ddp_model(images))
            losses = per_sample_loss(logits, target, 0.0 if mixup is not None else cfg.label_smoothing)
            train_loader.report(batch.ids, losses.detach(), logits=logits.detach(), labels=target)
            if batch.loss_weight is not None:
                losses = losses * batch.loss_weight  # the oracle plan's per-sample weights (prune-easy)
            loss = losses.mean()
            if aux is not None:
                loss = loss + lam_drloc * aux.float()

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model, step=step)
            if device.type == "cuda":
                torch.cuda.synchronize()  # deliberate: step_ms is compute, data_ms is the loader's wait
            step += 1
            t_ready = time.perf_counter()
            step_ms = 1000 * (t_ready - t_batch)
            img_s = cfg.batch_size * world / max(1e-9, (t_ready - t_batch) + data_ms / 1000)

            if step % cfg.log_every == 0 or step == total_steps:
                rec = {"step": step - 1, "epoch": epoch + (i + 1) / n_steps,
                       "time": t_ready - t_start, "loss": loss.item(), "lr": lr, "img_s": img_s,
                       "data_ms": data_ms, "step_ms": step_ms,
                       "knobs": {**dataclasses.asdict(knobs), "drloc_lambda": lam_drloc}}
                if aux is not None:
                    rec["drloc_loss"] = aux.item()
                log.write("step", **rec)
                log.progress(cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every,
                             loss=f"{rec['loss']:.3f}", img_s=f"{img_s:.0f}", wait_ms=f"{data_ms:.0f}",
                             size=knobs.image_size)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                save_checkpoint(epoch, time.perf_counter() - t_start)
            if cfg.max_steps and step >= cfg.max_steps:
                stop = True
                break
        if stop and not epoch_done:
            save_checkpoint(epoch, time.perf_counter() - t_start)  # mid-epoch: the loader keeps its position
            break

        # ---- end of epoch: evaluation, checkpoint (the next set_epoch hands the oracle's plan on)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            last_eval = evaluate(ema.module if ema is not None else model, val_loader, device, amp_ctx)
            log.write("eval", epoch=epoch + 1, step=step, time=time.perf_counter() - t_start, **last_eval)
            log.message(f"epoch {epoch + 1}/{cfg.epochs}: val top-1 {last_eval['top1']:.2f} % "
                        f"top-5 {last_eval['top5']:.2f} % ({time.perf_counter() - t_start:.0f} s)")
        save_checkpoint(epoch + 1, time.perf_counter() - t_start)
        if stop:
            break

    complete = step >= total_steps or (epoch + 1 == cfg.epochs and epoch_done)
    if not complete:
        log.message(f"stopped at step {step} (--max-steps); resume with --resume {out_dir}")
    elif oracle is not None:
        oracle.end_epoch(cfg.epochs - 1)  # the last epoch's DDP/KAR (no next epoch asks for it)
        log_oracle(log, oracle, cfg.epochs - 1, time.perf_counter() - t_start)
    wall = time.perf_counter() - t_start
    log.close()
    result = {"step": step, "wall_s": wall, "out": out_dir, **{f"val_{k}": v for k, v in last_eval.items()}}
    if rank == 0 and cfg.report and complete:
        from vitdata import report
        from vitdata.preview import preview_rows
        rows = [(label, _to_uint8(x, train_loader)) for label, x in samples]
        report_dir = os.path.join(out_dir, "report")
        path = report.write_report(report_dir, log.path, dataclasses.asdict(cfg), rows,
                                   extra={"schedule": sched.name})
        # The curriculum's own operations side by side (full / low-pass / erased) at the same epochs.
        views, titles, _ = preview_rows(train_src, sample_epochs, cfg, n=3, steps_per_epoch=steps_per_epoch)
        report.plot_samples(views, os.path.join(report_dir, "curriculum.png"), titles)
        result["report"] = path
        print(f"report: {path}")
    if rank == 0:
        with open(os.path.join(out_dir, "result.json"), "w") as fh:
            json.dump(result, fh, indent=1)
    return result


def _to_uint8(x: torch.Tensor, loader) -> np.ndarray:
    """Normalised (N, 3, H, W) -> (N, H, W, 3) uint8, undoing the loader's mean/std."""
    mean = torch.tensor(loader.cfg.output.mean).view(1, 3, 1, 1)
    std = torch.tensor(loader.cfg.output.std).view(1, 3, 1, 1)
    img = (x * std + mean).clamp(0, 1) * 255
    return img.round().byte().permute(0, 2, 3, 1).numpy()


def main(argv=None, prog: str = "vitdata train") -> int:
    cfg = parse_config(argv, prog)
    try:
        train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
