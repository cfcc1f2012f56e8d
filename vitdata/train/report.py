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

import os
import sys
from typing import Optional, Sequence

import numpy as np

from vitdata.train.log import read_log
from vitdata.optional import install_hint, optional_import, require

NO_PLOTS = f"report: PNG plots skipped: matplotlib is not installed ({install_hint('matplotlib')}); summary.md written"


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

    from vitdata.loader.backends.torch import decode_rgb
    from vitdata.data.reader import SampleReader
    from vitdata.data.index import open_index
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
    low = kernels.shrink_op(knobs.lowpass_filter)(images, knobs.lowpass_size) if knobs.lowpass_size else images
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
