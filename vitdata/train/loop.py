"""``vitdata train``: a small timm ViT training loop in which every seed method is a switch.

Read top to bottom: config (:mod:`vitdata.train.config`) -> distributed setup -> data (the train and eval
loaders; the train loader builds the curriculum schedule and the difficulty oracle, and says how many
classes, samples and steps there are) -> model, optimiser, EMA, Mixup -> resume -> the loop (one step:
fetch, knobs, mix, forward, ``loader.loss`` (per-sample loss, oracle report, loss weights), backward, step,
log) -> evaluation -> checkpoint -> report. It uses the library's public API only: ``create_loader``,
``loader.loss``, ``loader.planned_steps``. The pieces it calls live with their subjects: the knobs of the
switches in :func:`vitdata.curriculum.named.curriculum_schedule` (the loader's schedule "switches"), the
data options in :func:`vitdata.data.sources.resolve_sources`, the learning rate in :mod:`vitdata.train.lr`,
a run's checkpoint in :mod:`vitdata.train.checkpoint` (``save_run`` / ``load_run`` / ``restore_run``), the
log in :mod:`vitdata.train.log` and the end-of-run report in :mod:`vitdata.train.report`.
A resumed run writes into the folder it resumes (or ``--out``), whatever its config.json says.

With no data argument it trains on the built-in synthetic dataset (generated once into the vitdata
cache), on CPU in a few minutes. ``torchrun --nproc-per-node K -m vitdata train ...`` runs DDP (NCCL on
GPU, gloo on CPU). A rank that hangs (a stalled read) or dies leaves the others waiting in a collective;
``--dist-timeout`` (seconds, default 600) bounds that wait: the waiting ranks then fail with the process
group's timeout error instead of blocking for gloo's default 30 minutes.

Timing (:class:`StepTimer`): ``data_ms`` is the time a step waits for the loader's batch, ``step_ms`` the
rest of the step (mixing, forward, backward, optimiser). On CPU both are host clocks. On CUDA they are
events on the current stream, read on log steps only: nothing in the loop synchronises the device, so the
host runs ahead and DALI keeps prefetching on its own stream (see "Sync points" in :func:`train`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from vitdata.curriculum.named import make_schedule
from vitdata.data.index import open_index, split_classes
from vitdata.data.sources import resolve_sources
from vitdata.loader.config import (AugmentConfig, DistributedConfig, EvalConfig, LoaderConfig, OutputConfig,
                                   ScheduleConfig, torch_dtype)
from vitdata.loader.loader import create_loader
from vitdata.train import checkpoint, report
from vitdata.train.evaluate import evaluate
from vitdata.train.config import TrainConfig, check_train_config, parse_config, resumed_run_dir
from vitdata.train.log import Logger
from vitdata.train.lr import build_lr
from vitdata.train.runlock import lock_run
from vitdata.train.stop import StopSignal, exit_status, stop_group


# ----------------------------------------------------------------------------------------------------
# Pieces of the run


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


def run_dir(cfg: TrainConfig) -> str:
    """Where this run writes: ``--out``, else the folder it resumes, else runs/<time>. Nothing else: a
    resumed run never writes into a folder named by the run it was copied from."""
    if cfg.out:
        return cfg.out
    if cfg.resume:
        return resumed_run_dir(cfg.resume)
    return os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


def schedule_config(cfg: TrainConfig) -> ScheduleConfig:
    """The curriculum of ``cfg``'s switches as the loader's ScheduleConfig: the named schedule "switches"
    (:func:`vitdata.curriculum.named.curriculum_schedule`), which the loader lays out over its own steps
    per epoch."""
    kwargs = dict(patch_size=cfg.patch_size, curriculum=cfg.curriculum, size_curriculum=cfg.size_curriculum,
                  pss=cfg.pss, erase_ratio=cfg.patch_erasing, randaug_magnitude=cfg.randaug_magnitude,
                  size_epoch_step=cfg.size_epoch_step or None, curriculum_magnitude=cfg.curriculum_magnitude)
    if cfg.curriculum_augment_at != "full":   # written only when set: stored configs of earlier runs still match
        kwargs["augment_at"] = cfg.curriculum_augment_at
    return ScheduleConfig(name="switches", epochs=cfg.epochs, kwargs=kwargs)


def build_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """The schedule the training loader builds from :func:`schedule_config` at ``steps_per_epoch`` (for the
    preview and the compute estimate, which lay it out without a loader)."""
    sc = schedule_config(cfg)
    return make_schedule(sc.name, sc.epochs, steps_per_epoch, cfg.image_size, **sc.kwargs)


def loader_config(cfg: TrainConfig, train_src: str, val_src: str, rank: int, world: int, device, schedule=None):
    """The LoaderConfig of the train and eval loaders. ``--workers`` sets the source workers (0 = the
    source runs in the loader's own thread) and the DALI threads, which must be at least 1. ``schedule``:
    a ready Schedule (the preview's), else the switches' :func:`schedule_config`."""
    sc = schedule_config(cfg) if schedule is None else ScheduleConfig(schedule=schedule)
    return LoaderConfig(data=train_src, eval=EvalConfig(data=val_src), batch_size=cfg.batch_size,
                        image_size=cfg.image_size,
                        augment=AugmentConfig(scale=(cfg.crop_scale, 1.0), patch_size=cfg.patch_size),
                        output=OutputConfig(device=str(device)), schedule=sc,
                        distributed=DistributedConfig(rank=rank, world_size=world), backend=cfg.backend,
                        num_threads=max(1, cfg.workers), num_workers=cfg.workers, seed=cfg.seed,
                        decode_levels=cfg.decode_levels)


def build_loaders(cfg: TrainConfig, rank: int, world: int, device):
    """(train loader, eval loader) of the run's data (:func:`vitdata.data.sources.resolve_sources`). The
    train loader lays the curriculum out over its steps per epoch and holds the difficulty oracle of
    ``--oracle`` (prune-easy anneals over ``cfg.epochs``, the schedule's epochs; ``--oracle-mixing`` turns
    on the data-centric policy's Mixup/CutMix lever). A ``--test`` split is checked here too, before any
    training: its labels follow the training split's class list, and a class that list lacks is refused."""
    train_src, val_src = resolve_sources(cfg.data, cfg.train, cfg.val, synthetic_samples=cfg.synthetic_samples,
                                         rank=rank)
    lcfg = loader_config(cfg, train_src, val_src, rank, world, device)
    if cfg.test:   # labelled by the training split's classes, and checked now rather than after the run
        open_index(cfg.test, bad_labels="mark", label=lcfg.label_member,
                   classes=split_classes(cfg.test, train_src, lcfg.label_member))
    train_loader = create_loader(lcfg, split="train", oracle=cfg.oracle,
                                 oracle_options={"mix_lever": True} if cfg.oracle_mixing else None)
    return train_loader, create_loader(lcfg, split="eval")


def create_model(cfg: TrainConfig, num_classes: int, device):
    """The timm ViT with the model-side switches (locality, PSS, DRLoc head), on ``device``."""
    from vitdata.train.models import create_vit
    timm_kw = dict(patch_size=cfg.patch_size, drop_path_rate=cfg.drop_path, global_pool=cfg.global_pool)
    for name in ("depth", "embed_dim", "num_heads"):
        if getattr(cfg, name):
            timm_kw[name] = getattr(cfg, name)
    return create_vit(cfg.model, num_classes=num_classes, img_size=cfg.image_size, locality=cfg.locality,
                      pss=cfg.pss_mode if cfg.pss else None, drloc=cfg.drloc > 0, drloc_target=cfg.drloc_target,
                      drloc_tokens=cfg.drloc_tokens, **timm_kw).to(device)


def mixed_precision(cfg: TrainConfig, device):
    """(``amp_ctx``, dtype): a factory of the forward's autocast context (a null context with ``--amp off``;
    "auto" is bf16 on CUDA, off on CPU) and its dtype (None when off)."""
    amp = {"auto": "bf16" if device.type == "cuda" else "off"}.get(cfg.amp, cfg.amp)
    dtype = None if amp == "off" else torch_dtype(amp)

    def amp_ctx():
        return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
    return amp_ctx, dtype


def unpack(out):
    """Model output -> (logits, DRLoc loss or None); the model returns a pair in training with DRLoc."""
    return out if isinstance(out, tuple) else (out, None)


class StepTimer:
    """Splits each step's time into data wait and compute, without synchronising every step.

    The loop calls :meth:`start` when it is ready for a batch (epoch start), :meth:`batch_ready` when
    the batch is in hand, :meth:`step_done` after the optimiser step, and :meth:`read` -> (data_ms,
    step_ms) of the last step only when it logs.

    CPU: host clocks. CUDA (``device.type == "cuda"``): timing events recorded on the current stream, so
    work on other streams (DALI's prefetch of later batches) is neither waited for nor counted. data_ms is
    then the time the stream sat between the previous step's end and the batch being handed to it (the
    host was blocked in the loader; ~0 while the host runs ahead), step_ms the step's own work on the
    stream. :meth:`read` waits for the step's end event: that is the loop's one timing sync point, on log
    steps only. ``cuda``: the module providing ``Event`` (tests pass a fake; default ``torch.cuda``)."""

    def __init__(self, device: torch.device, cuda=None):
        self.cuda = (cuda if cuda is not None else torch.cuda) if device.type == "cuda" else None
        if self.cuda is not None:
            # Two end events used in turn: the previous step's end must survive until this step is read.
            self._ends = [self.cuda.Event(enable_timing=True) for _ in range(2)]
            self._ready_event = self.cuda.Event(enable_timing=True)
            self._turn = 0
        self._last = self._ready = self._end = None

    def _mark(self):
        if self.cuda is None:
            return time.perf_counter()
        self._turn ^= 1
        event = self._ends[self._turn]
        event.record()  # on the current stream, asynchronously
        return event

    def start(self) -> None:
        self._last = self._mark()

    def batch_ready(self) -> None:
        if self.cuda is None:
            self._ready = time.perf_counter()
        else:
            self._ready = self._ready_event
            self._ready.record()
        self._data_from = self._last

    def step_done(self) -> None:
        self._end = self._last = self._mark()

    def read(self) -> tuple[float, float]:
        """(data_ms, step_ms) of the last step. On CUDA this waits for that step's work on the current stream."""
        if self.cuda is None:
            return 1000 * (self._ready - self._data_from), 1000 * (self._end - self._ready)
        self._end.synchronize()  # sync point: the step's figures are read (log steps only)
        return self._data_from.elapsed_time(self._ready), self._ready.elapsed_time(self._end)


# ----------------------------------------------------------------------------------------------------
# The run


def train(cfg: TrainConfig) -> dict:
    """Run ``cfg``; returns {step, wall_s, out, val_top1, ...} (also written to OUT/result.json), and
    ``stopped_by`` (a signal's name) when a SIGTERM or SIGINT stopped it with a checkpoint.

    Before anything is written: the run folder is locked (:mod:`vitdata.train.runlock`: a second run on it is
    refused naming the first's pid; a folder that cannot be written is refused naming it), and SIGTERM and
    SIGINT become a stop at the next step boundary (:mod:`vitdata.train.stop`); both are undone on return."""
    check_train_config(cfg)
    rank, world, device = setup_distributed(cfg)
    out_dir = run_dir(cfg)
    lock = lock_run(out_dir, rank, world)
    stop = StopSignal(stop_group(world, datetime.timedelta(seconds=cfg.dist_timeout)), world).install()
    try:
        return run_training(dataclasses.replace(cfg, out=out_dir), rank, world, device, stop)
    finally:
        stop.close()
        if lock is not None:
            lock.release()


def run_training(cfg: TrainConfig, rank: int, world: int, device, stop: StopSignal) -> dict:
    """The run of :func:`train`, in ``cfg.out`` (locked), read top to bottom.

    Sync points (where the host waits for the device), all deliberate and commented where they happen:
    ``set_epoch`` with an oracle (it folds the epoch's reports into its plan, across ranks);
    :meth:`StepTimer.read` and ``loss.item()`` on log steps; the copy of a few sample images on the first
    step of the report's epochs (rank 0); evaluation's totals; checkpoints (state to host memory);
    GradScaler's inf check with fp16 only. Every other step queues its work and moves on to the next batch.
    The stop agreement at each step boundary is a host-side collective (gloo), not a device sync."""
    from timm.data import Mixup
    from timm.optim import param_groups_weight_decay
    from timm.utils import ModelEmaV3
    from vitdata.train.models import drloc_lambda

    out_dir = cfg.out
    # A damaged checkpoint, or one of another world size, fails here, before anything is written.
    ck_dir, resumed = checkpoint.load_run(cfg.resume, world) if cfg.resume else (None, None)
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)

    # ---- data: the loaders (curriculum schedule and difficulty oracle inside), and what the run needs of them
    train_loader, val_loader = build_loaders(cfg, rank, world, device)
    sched, oracle, num_classes = train_loader.schedule, train_loader.oracle, train_loader.num_classes
    planned = train_loader.planned_steps()  # per epoch; prune-easy's: the full count, its epochs run fewer
    steps_per_epoch, total_steps = planned[0], sum(planned)
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    lr_of = build_lr(cfg, sched, steps_per_epoch)

    # ---- model, optimiser, EMA, Mixup/CutMix, mixed precision, loss
    model = create_model(cfg, num_classes, device)
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
    amp_ctx, amp_dtype = mixed_precision(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    # Evaluated per sample by loader.loss. Mixup's soft targets carry the smoothing already; with soft
    # targets the criterion's own label_smoothing is not applied.
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    state = checkpoint.TrainState(model, optimizer, scaler, ema)

    # ---- resume: model, optimiser, scaler, EMA, loader (its position inside the epoch), oracle, RNGs
    at = checkpoint.restore_run(ck_dir, resumed, state, train_loader, rank, config=dataclasses.asdict(cfg),
                                fresh_loader=cfg.fresh_loader) if resumed else checkpoint.Resumed(0, 0, 0.0, False)
    step, start_epoch, wall0 = at.step, at.epoch, at.elapsed
    del resumed  # the tensors now live in the model and optimiser
    # Written once the resume checks passed: a refused resume (another model, data that changed) leaves the
    # folder's config.json as it was.
    if rank == 0:
        checkpoint.write_file(os.path.join(out_dir, "config.json"),
                              json.dumps(dataclasses.asdict(cfg), indent=1).encode())

    def save(epoch: int, eval_pending: bool = False):  # sync: the state is copied to host memory
        checkpoint.save_run(os.path.join(out_dir, "checkpoint"), state, train_loader, step=step, epoch=epoch,
                            elapsed=time.perf_counter() - t_start, config=dataclasses.asdict(cfg), rank=rank,
                            world=world, scheduler={"step": step, "total": total_steps, "warmup": warmup_steps},
                            eval_pending=eval_pending)

    log = Logger(out_dir, rank, total_steps, cfg.progress and sys.stderr.isatty(), start_step=step,
                 resume_time=wall0 if cfg.resume else None)
    log.message(f"vitdata train: {cfg.model} depth={cfg.depth or 'default'} patch={cfg.patch_size} "
                f"{num_classes} classes, {train_loader.num_samples} train samples, {steps_per_epoch} steps/epoch x "
                f"{cfg.epochs} epochs, world={world}, device={device}, schedule={sched.name}, out={out_dir}")

    def run_eval(epochs_done: int) -> dict:  # the epoch's evaluation: bad files are counted, listed and skipped
        res = evaluate(ema.module if ema is not None else model, val_loader, device, amp_ctx, strict=cfg.strict_eval)
        log.write("eval", epoch=epochs_done, step=step, time=time.perf_counter() - t_start, **res)
        for b in res["bad_files"][:20]:
            log.message(f"vitdata train: evaluation skipped {b['path']}: [{b['reason']}] {b['detail'][:160]}")
        skipped = f", {res['skipped']} bad files skipped (log.jsonl)" if res["skipped"] else ""
        log.message(f"epoch {epochs_done}/{cfg.epochs}: val top-1 {res['top1']:.2f} % "
                    f"top-5 {res['top5']:.2f} %{skipped} ({time.perf_counter() - t_start:.0f} s)")
        return res

    samples = []  # (label, images) as the model saw them, a few epochs, for the report
    sample_epochs = sorted({0, cfg.epochs // 3, (2 * cfg.epochs) // 3, cfg.epochs - 1})
    last_eval = {}
    timer = StepTimer(device)
    t_start = time.perf_counter() - wall0
    stop_max, signum, epoch, epoch_done = False, 0, start_epoch - 1, True
    if at.eval_pending:  # the checkpoint was taken at an epoch's end, before its evaluation
        last_eval = run_eval(start_epoch)

    # ---- the loop
    for epoch in range(start_epoch, cfg.epochs):
        train_loader.set_epoch(epoch)  # sync with an oracle: folds epoch - 1's reports and plans this epoch
        log.oracle(oracle, epoch - 1, time.perf_counter() - t_start)
        if mixup is not None and oracle is not None and oracle.mix_prob() is not None:
            mixup.mix_prob = oracle.mix_prob()  # the Mixup/CutMix lever (--oracle-mixing)
        lam_drloc = drloc_lambda(cfg.drloc, epoch, cfg.epochs, schedule=cfg.drloc_schedule) if cfg.drloc > 0 else 0.0
        model.train()
        # Steps of this epoch (a pruning plan can shorten it) and where it starts (mid-epoch on resume).
        n_steps, first = len(train_loader), train_loader.position
        epoch_done = False
        timer.start()
        for i, batch in enumerate(train_loader, start=first):
            timer.batch_ready()  # the wait for this batch ends here
            epoch_done = i + 1 == n_steps
            lr = lr_of(epoch, i, n_steps, step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            knobs = batch.knobs
            if cfg.pss:
                model.set_keep_ratio(knobs.keep_ratio)
            images, target = batch.images, batch.labels
            if rank == 0 and epoch in sample_epochs and not any(s[0] == f"epoch {epoch}" for s in samples):
                samples.append((f"epoch {epoch}", images[:8].detach().cpu()))  # sync: once per sampled epoch
            if mixup is not None:
                images, target = mixup(images, target)

            with amp_ctx():
                logits, aux = unpack(ddp_model(images))
            # Per-sample losses -> the oracle's report (no sync) -> the plan's loss weights (prune-easy) -> mean.
            # Under Mixup/CutMix the oracle's p_y is the own label's probability over its share of the target.
            loss = train_loader.loss(logits, batch, target=target, criterion=criterion,
                                     own_labels=batch.labels if mixup is not None else None)
            if aux is not None:
                loss = loss + lam_drloc * aux.float()

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)  # with fp16 only: reads the inf check on the host (a sync)
            scaler.update()
            if ema is not None:
                ema.update(model, step=step)
            timer.step_done()
            step += 1

            if step % cfg.log_every == 0 or step == total_steps:
                data_ms, step_ms = timer.read()  # sync point: waits for this step on the current stream
                rec = {"step": step - 1, "epoch": epoch + (i + 1) / n_steps,
                       "time": time.perf_counter() - t_start, "loss": loss.item(), "lr": lr,  # ready: no wait
                       "img_s": cfg.batch_size * world / max(1e-9, (data_ms + step_ms) / 1000),
                       "data_ms": data_ms, "step_ms": step_ms,
                       "knobs": {**dataclasses.asdict(knobs), "drloc_lambda": lam_drloc}}
                if aux is not None:
                    rec["drloc_loss"] = aux.item()
                log.write("step", **rec)
                log.progress(cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every,
                             loss=f"{rec['loss']:.3f}", img_s=f"{rec['img_s']:.0f}", wait_ms=f"{data_ms:.0f}",
                             size=knobs.image_size)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and not epoch_done:  # an epoch's end saves below
                save(epoch)
            stop_max = bool(cfg.max_steps and step >= cfg.max_steps)
            signum = stop.agreed()  # a collective under torchrun (gloo, host side): every rank, every step
            if stop_max or signum:
                break
        if (stop_max or signum) and not epoch_done:
            save(epoch)  # mid-epoch: the loader keeps its position
            break

        # ---- end of epoch: checkpoint, then evaluation (the next set_epoch hands the oracle's plan on)
        due = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        save(epoch + 1, eval_pending=due)  # first: a failing or stopped evaluation costs no training
        signum = signum or stop.agreed()
        if due and not signum:  # on a stop the resumed run evaluates (the checkpoint says it is pending)
            last_eval = run_eval(epoch + 1)
            signum = stop.agreed()
        if stop_max or signum:
            break

    # ---- end of run: the last epoch's oracle metrics, the report, result.json
    complete = not signum and (step >= total_steps or (epoch + 1 == cfg.epochs and epoch_done))
    if signum:
        log.message(f"vitdata train: stopped by {signal.Signals(signum).name} at step {step} with a checkpoint in "
                    f"{os.path.join(out_dir, 'checkpoint')}; resume with: vitdata train --resume {out_dir}")
    elif not complete:
        log.message(f"stopped at step {step} (--max-steps); resume with --resume {out_dir}")
    elif oracle is not None:
        oracle.end_epoch(cfg.epochs - 1)  # the last epoch's DDP/KAR (no next epoch asks for it)
        log.oracle(oracle, cfg.epochs - 1, time.perf_counter() - t_start)
    wall = time.perf_counter() - t_start
    result = {"step": step, "wall_s": wall, "out": out_dir, **{f"val_{k}": v for k, v in last_eval.items()}}
    if signum:
        result["stopped_by"] = signal.Signals(signum).name
    if cfg.test and complete:  # after wall_s: the test split is not part of the run's time
        test_loader = create_loader(loader_config(cfg, train_loader.cfg.data, cfg.test, rank, world, device),
                                    split="eval")
        test = evaluate(ema.module if ema is not None else model, test_loader, device, amp_ctx, strict=cfg.strict_eval)
        log.write("test", epoch=cfg.epochs, step=step, **test)
        result.update({f"test_{k}": v for k, v in test.items()})
    log.close()
    if rank == 0 and cfg.report and complete:
        result["report"] = report.write_run_report(
            os.path.join(out_dir, "report"), log.path, dataclasses.asdict(cfg), samples,
            mean=train_loader.cfg.output.mean, std=train_loader.cfg.output.std, schedule=sched,
            source=train_loader.cfg.data, epochs=sample_epochs, patch_size=cfg.patch_size, seed=cfg.seed)
        print(f"report: {result['report']}")
    if rank == 0:
        checkpoint.write_file(os.path.join(out_dir, "result.json"), json.dumps(result, indent=1).encode())
    return result


def main(argv=None, prog: str = "vitdata train") -> int:
    """``vitdata train``: 0 when the run ended (or stopped at --max-steps), ``128 + N`` when signal N stopped
    it with a checkpoint (143 for SIGTERM, 130 for Ctrl-C; :func:`vitdata.train.stop.exit_status`)."""
    cfg = parse_config(argv, prog)
    try:
        result = train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    stopped = result.get("stopped_by")
    return exit_status(signal.Signals[stopped]) if stopped else 0


if __name__ == "__main__":
    raise SystemExit(main())
