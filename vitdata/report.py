"""A training run's log and its end-of-run report: PNG plots read from the run's JSONL log, sample grids,
the curriculum's views, and a Markdown summary.

:class:`Logger` writes the log (rank 0): one JSON object per line, ``kind`` first:
    step:  step, epoch (fractional), time (s since start), loss, lr, img_s, data_ms, step_ms, knobs{...}
    eval:  step, epoch, time, top1, top5, loss
    epoch: epoch, time, oracle{ddp_e, ddp_h, kar, period} (when an oracle runs)

Files written into ``report_dir`` by :func:`write_report`: loss_acc.png, throughput.png, knobs.png,
oracle.png (with an oracle), samples.png (when sample images were captured), summary.md;
:func:`write_run_report` (the end of ``vitdata train``) adds curriculum.png, the full / low-pass / erased
views of :func:`curriculum_rows` (what ``vitdata preview`` draws) at the same epochs. Without matplotlib
the PNGs are skipped with one message (:data:`NO_PLOTS`) and summary.md is still written; without tqdm
the progress bar is a plain log line (:class:`PlainProgress`); see :mod:`vitdata.optional`.

Images handed to the grids are normalised (N, 3, H, W) tensors as the loader delivers them; :func:`to_uint8`
undoes the normalisation with the mean and std they were normalised with (the loader's ``output.mean`` /
``output.std``), so grids show the true colours whatever the model's normalisation.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

import numpy as np

from vitdata.optional import install_hint, optional_import, require

NO_PLOTS = f"report: PNG plots skipped: matplotlib is not installed ({install_hint('matplotlib')}); summary.md written"

def read_log(path: str) -> dict[str, list[dict]]:
    """Records of the JSONL log grouped by ``kind``; a torn last line (crash mid-write) is skipped."""
    out: dict[str, list[dict]] = {}
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            out.setdefault(r.get("kind", "?"), []).append(r)
    return out


def _plt():
    matplotlib = require("matplotlib", "drawing PNG plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) < 2 * n or n <= 1:
        return y
    w = np.ones(n)
    return np.convolve(y, w, mode="same") / np.convolve(np.ones_like(y), w, mode="same")  # no edge droop


def plot_loss_acc(log: dict, path: str) -> None:
    plt = _plt()
    steps, evals = log.get("step", []), log.get("eval", [])
    fig, ax = plt.subplots(2, 2, figsize=(11, 7))
    if steps:
        t = np.array([r["time"] for r in steps]) / 60
        e = np.array([r["epoch"] for r in steps])
        loss = _smooth(np.array([r["loss"] for r in steps], float), 5)
        ax[0, 0].plot(t, loss)
        ax[0, 1].plot(e, loss)
    ax[0, 0].set(xlabel="wall time (min)", ylabel="train loss")
    ax[0, 1].set(xlabel="epoch", ylabel="train loss")
    if evals:
        t = np.array([r["time"] for r in evals]) / 60
        e = np.array([r["epoch"] for r in evals])
        for k in ("top1", "top5"):
            ax[1, 0].plot(t, [r[k] for r in evals], "o-", label=k)
            ax[1, 1].plot(e, [r[k] for r in evals], "o-", label=k)
        ax[1, 0].legend()
    ax[1, 0].set(xlabel="wall time (min)", ylabel="val accuracy (%)")
    ax[1, 1].set(xlabel="epoch", ylabel="val accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_throughput(log: dict, path: str) -> None:
    plt = _plt()
    steps = log.get("step", [])
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
    if steps:
        s = np.array([r["step"] for r in steps])
        ax[0].plot(s, [r["img_s"] for r in steps])
        ax[1].plot(s, [r["data_ms"] for r in steps], label="data wait")
        ax[1].plot(s, [r["step_ms"] for r in steps], label="step (compute)")
        ax[1].legend()
    ax[0].set(xlabel="step", ylabel="images/s")
    ax[1].set(xlabel="step", ylabel="ms per step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_knobs(log: dict, path: str) -> None:
    plt = _plt()
    steps = [r for r in log.get("step", []) if r.get("knobs")]
    names = ["image_size", "lowpass_size", "randaug_magnitude", "erase_ratio", "keep_ratio", "drloc_lambda", "lr"]
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3))
    e = np.array([r["epoch"] for r in steps])
    for ax, k in zip(axes, names):
        y = [r.get(k) if k == "lr" else r["knobs"].get(k) for r in steps]
        y = np.array([np.nan if v is None else float(v) for v in y])
        if len(y):
            ax.plot(e, y)
        ax.set(xlabel="epoch", title=k)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_oracle(log: dict, path: str) -> bool:
    recs = [r for r in log.get("epoch", []) if r.get("oracle")]
    if not recs:
        return False
    plt = _plt()
    e = [r["epoch"] for r in recs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, label in (("ddp_e", "DDP-e (easy share)"), ("ddp_h", "DDP-h (hard share)"), ("kar", "KAR")):
        ax.plot(e, [r["oracle"].get(k, np.nan) for r in recs], "o-", label=label)
    ax.set(xlabel="epoch", ylabel="share / rate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_samples(rows: list[tuple[str, np.ndarray]], path: str, columns: Optional[list[str]] = None) -> None:
    """rows: (label, uint8 images (H, W, 3) as an array (n, H, W, 3) or a list; sizes may differ) -> one PNG."""
    plt = _plt()
    n_cols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.6 * n_cols, 1.7 * len(rows)), squeeze=False)
    for i, (label, imgs) in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(imgs[j], interpolation="nearest")
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            if i == 0 and columns and j < len(columns):
                ax.set_title(columns[j], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summary_markdown(log: dict, config: dict, extra: Optional[dict] = None, plots: bool = True) -> str:
    steps, evals = log.get("step", []), log.get("eval", [])
    last = evals[-1] if evals else {}
    best = max(evals, key=lambda r: r["top1"]) if evals else {}
    wall = max([r["time"] for r in steps + evals] or [0.0])
    waits = [r["data_ms"] for r in steps[len(steps) // 10:]]
    comps = [r["step_ms"] for r in steps[len(steps) // 10:]]
    lines = ["# vitdata training run", "",
             f"- model: `{config.get('model')}` (depth {config.get('depth')}, patch {config.get('patch_size')}), "
             f"recipe `{config.get('recipe') or 'none'}`, {config.get('epochs')} epochs, "
             f"batch {config.get('batch_size')}",
             "- switches: " + ", ".join(f"{k}={config.get(k)}" for k in (
                 "curriculum", "size_curriculum", "locality", "pss", "patch_erasing", "oracle", "drloc")),
             f"- wall time: {wall / 60:.1f} min over {steps[-1]['step'] + 1 if steps else 0} steps",
             f"- final val top-1 {last.get('top1', float('nan')):.2f} %, top-5 {last.get('top5', float('nan')):.2f} % "
             f"(best top-1 {best.get('top1', float('nan')):.2f} % at epoch {best.get('epoch', '-')})"]
    if waits:
        lines.append(f"- median data wait {np.median(waits):.1f} ms vs median step {np.median(comps):.1f} ms "
                     f"(median {np.median([r['img_s'] for r in steps]):.0f} images/s)")
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    lines += ["", "| epoch | top-1 | top-5 | time (min) |", "|---|---|---|---|"]
    lines += [f"| {r['epoch']:.2f} | {r['top1']:.2f} | {r['top5']:.2f} | {r['time'] / 60:.2f} |" for r in evals]
    if plots:
        lines += ["", "Plots: loss_acc.png, throughput.png, knobs.png, oracle.png (with --oracle), samples.png "
                  "(batches as the model saw them), curriculum.png (full / low-pass / erased views)", ""]
    else:
        lines += ["", f"Plots: none (matplotlib is not installed; {install_hint('matplotlib')})", ""]
    return "\n".join(lines)


def write_report(report_dir: str, log_path: str, config: dict, samples: Optional[list] = None,
                 sample_columns: Optional[list[str]] = None, extra: Optional[dict] = None) -> str:
    """Write every plot and summary.md into ``report_dir``; returns the summary's path. Without matplotlib
    the plots are skipped (one message on stderr, :data:`NO_PLOTS`) and summary.md says so."""
    os.makedirs(report_dir, exist_ok=True)
    log = read_log(log_path)
    plots = can_plot()
    if plots:
        plot_loss_acc(log, os.path.join(report_dir, "loss_acc.png"))
        plot_throughput(log, os.path.join(report_dir, "throughput.png"))
        plot_knobs(log, os.path.join(report_dir, "knobs.png"))
        plot_oracle(log, os.path.join(report_dir, "oracle.png"))
        if samples:
            plot_samples(samples, os.path.join(report_dir, "samples.png"), sample_columns)
    else:
        print(NO_PLOTS, file=sys.stderr)
    path = os.path.join(report_dir, "summary.md")
    with open(path, "w") as f:
        f.write(summary_markdown(log, config, extra, plots=plots))
    return path


def can_plot() -> bool:
    """Whether matplotlib is importable (the report's PNGs need it)."""
    return optional_import("matplotlib") is not None


# ----------------------------------------------------------------------------------------------------
# The log written during the run


def _record_time(line: str) -> float:
    try:
        return float(json.loads(line).get("time", 0.0))
    except ValueError:  # a torn last line
        return float("inf")


class PlainProgress:
    """What stands in for a tqdm bar without tqdm: ``step N/total (p %)`` and the postfix as one plain line on
    stderr at most every ``every_s`` seconds, and at the last step. Same methods as the Logger uses."""

    def __init__(self, total: int, initial: int = 0, every_s: float = 10.0):
        import time

        self.total, self.n, self.every_s, self._clock = total, initial, every_s, time.monotonic
        self._last, self._postfix = self._clock(), {}

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        if now - self._last >= self.every_s or self.n >= self.total:
            self._last = now
            post = " ".join(f"{k}={v}" for k, v in self._postfix.items())
            print(f"step {self.n}/{self.total} ({100.0 * self.n / max(1, self.total):.0f} %) {post}".rstrip(),
                  file=sys.stderr, flush=True)

    def set_postfix(self, postfix: dict, refresh: bool = False) -> None:
        self._postfix = dict(postfix)

    def write(self, text: str) -> None:
        print(text)

    def close(self) -> None:
        pass


class Logger:
    """JSONL always (rank 0), TensorBoard when importable, a tqdm bar when asked.

    ``resume_time`` (s): a resumed run first drops the records logged after its checkpoint's time (a killed
    run may have logged past its last checkpoint; those steps are redone)."""

    def __init__(self, out_dir: str, rank: int, total_steps: int, progress: bool, start_step: int = 0,
                 resume_time: float | None = None):
        from vitdata.io import atomic_write
        self.rank = rank
        self.path = os.path.join(out_dir, "log.jsonl")
        if rank == 0 and resume_time is not None and os.path.exists(self.path):
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
                tqdm = optional_import("tqdm")
                self.bar = (PlainProgress(total_steps, start_step) if tqdm is None else
                            tqdm.tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, file=sys.stderr))

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

    def oracle(self, oracle, epoch: int, elapsed: float) -> None:
        """Write the oracle's metrics of ``epoch`` (DDP-e/h, KAR, period) once they exist."""
        if oracle is None or epoch < 0:
            return
        m = next((m for m in oracle.metrics if m.get("epoch") == epoch), None)
        if m is not None:
            self.write("epoch", epoch=epoch + 1, time=elapsed,
                       oracle={**{k: m.get(k) for k in ("ddp_e", "ddp_h", "kar", "period", "histogram")},
                               **{k: m[k] for k in ("strength", "mix_prob") if k in m}})

    def close(self):
        for h in (self.bar, self.tb, self.file):
            if h is not None:
                h.close()


# ----------------------------------------------------------------------------------------------------
# Images: normalised tensors back to pixels, and the curriculum's own views


def to_uint8(x, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised (N, 3, H, W) tensor (any float dtype, any device) -> (N, H, W, 3) uint8, undoing
    ``(pixel / 255 - mean) / std`` with the ``mean`` and ``std`` the images were normalised with."""
    if mean is None or std is None:
        raise ValueError("to_uint8 needs the mean and std the images were normalised with")
    img = x.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    img = img * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def load_images(source: str, n: int, size: int, mean: Sequence[float], std: Sequence[float], seed: int = 0,
                ids: Optional[Sequence[int]] = None):
    """``n`` images of ``source`` (one per class first, then random; or the index ids ``ids``), centre-cropped
    and resized to ``size`` (bicubic): (n, 3, size, size) float32 tensor normalised with ``mean`` / ``std``."""
    import torch
    from PIL import Image

    from vitdata.backends.torch import decode_rgb
    from vitdata.index import SampleReader, open_index
    wanted = None if ids is None else [int(i) for i in ids]   # (the loop below reuses the name ids)
    index = open_index(source)
    reader = SampleReader(index)
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(index.num_classes):  # one of each class, then random
        ids = np.flatnonzero(index.label == c)
        if len(ids) and len(picks) < n:
            picks.append(int(rng.choice(ids)))
    while len(picks) < min(n, len(index)):
        picks.append(int(rng.integers(len(index))))
    if wanted is not None:
        picks = wanted
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    out = []
    for i in picks:
        img = decode_rgb(reader.read(i))     # the torch backend's decode policy (EXIF, modes)
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        img = img.resize((size, size), Image.BICUBIC)
        out.append((np.asarray(img, np.float32) / 255 - mean) / std)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def views(images, knobs, patch_size: int, seed: int = 0) -> dict:
    """The three views of ``images`` (normalised, already at knobs.image_size) under ``knobs``: "full",
    "low-pass" (the Fourier crop at ``lowpass_size``; the same as full when None) and "erased"
    (PatchErasing at ``erase_ratio``; the same as full when 0)."""
    import torch

    from vitdata import kernels
    full = images
    low = kernels.lowpass_crop(images, knobs.lowpass_size) if knobs.lowpass_size else images
    erased = images
    if knobs.erase_ratio > 0:
        grid = (images.shape[-2] // patch_size, images.shape[-1] // patch_size)
        params = kernels.sample_patch_erase_params(images.shape[0], grid, float(knobs.erase_ratio),
                                                   torch.Generator().manual_seed(seed))
        erased = kernels.patch_erase(images, params, patch_size)
    return {"full": full, "low-pass": low, "erased": erased}


def curriculum_rows(source: str, schedule, epochs: list[int], patch_size: int, mean: Sequence[float],
                    std: Sequence[float], n: int = 4, seed: int = 0):
    """Rows for :func:`plot_samples`: per epoch (0-based, clamped to the schedule's), ``n`` images of
    ``source`` in each view of :func:`views` under the knobs of that epoch's first step, side by side (a view
    that no epoch changes, e.g. "erased" without PatchErasing, is left out).
    Images are centre-cropped and RandAugment is left out, so the views differ only by the curriculum's
    own operations.

    Returns (rows, column titles, knobs per epoch)."""
    all_knobs = [schedule(min(max(e, 0), schedule.epochs - 1), 0) for e in epochs]
    # A view no epoch changes would only repeat "full": it is left out.
    names = ["full"] + (["low-pass"] if any(k.lowpass_size for k in all_knobs) else []) + \
        (["erased"] if any(k.erase_ratio > 0 for k in all_knobs) else [])
    rows = []
    for e, k in zip(epochs, all_knobs):
        imgs = load_images(source, n, k.image_size, mean, std, seed=seed)
        v = views(imgs, k, patch_size, seed=seed + e)
        label = f"epoch {e}\n{k.image_size}px lp={k.lowpass_size or '-'}\nerase={k.erase_ratio:g}"
        # The low-pass view is smaller (B x B); each tile has its own axes, so it is shown stretched.
        pixels = {name: to_uint8(v[name], mean, std) for name in names}
        rows.append((label, [pixels[name][i] for i in range(len(imgs)) for name in names]))
    titles = [name for _ in range(n) for name in names]
    return rows, titles, all_knobs


def write_run_report(report_dir: str, log_path: str, config: dict, samples: list, *, mean: Sequence[float],
                     std: Sequence[float], schedule, source: str, epochs: list[int], patch_size: int,
                     seed: int = 0) -> str:
    """The end of ``vitdata train``: :func:`write_report` with ``samples`` ((label, normalised (N, 3, H, W)
    images as the model saw them) pairs) as samples.png, plus curriculum.png (:func:`curriculum_rows` of
    ``source`` at ``epochs``). ``mean`` / ``std``: the loader's normalisation. Returns summary.md's path."""
    rows = [(label, to_uint8(x, mean, std)) for label, x in samples]
    path = write_report(report_dir, log_path, config, rows, extra={"schedule": schedule.name})
    if not can_plot():   # write_report said so once
        return path
    grid, titles, _ = curriculum_rows(source, schedule, epochs, patch_size, mean, std, n=3, seed=seed)
    plot_samples(grid, os.path.join(report_dir, "curriculum.png"), titles)
    return path
