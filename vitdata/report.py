"""The end-of-run report: PNG plots read from the run's JSONL log, a sample grid, and a Markdown summary.

Log records used (one JSON object per line, ``kind`` first; see vitdata/train.py):
    step:  step, epoch (fractional), time (s since start), loss, lr, img_s, data_ms, step_ms, knobs{...}
    eval:  step, epoch, time, top1, top5, loss
    epoch: epoch, time, oracle{ddp_e, ddp_h, kar, period} (when an oracle runs)

Files written into ``report_dir``: loss_acc.png, throughput.png, knobs.png, oracle.png (with an oracle),
samples.png (when sample images were captured), summary.md. (vitdata/train.py adds curriculum.png, the
full / low-pass / erased views of vitdata/preview.py at the same epochs.)
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np


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
    import matplotlib
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


def summary_markdown(log: dict, config: dict, extra: Optional[dict] = None) -> str:
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
    lines += ["", "Plots: loss_acc.png, throughput.png, knobs.png, oracle.png (with --oracle), samples.png (batches as "
              "the model saw them), curriculum.png (full / low-pass / erased views)", ""]
    return "\n".join(lines)


def write_report(report_dir: str, log_path: str, config: dict, samples: Optional[list] = None,
                 sample_columns: Optional[list[str]] = None, extra: Optional[dict] = None) -> str:
    """Write every plot and summary.md into ``report_dir``; returns the summary's path."""
    os.makedirs(report_dir, exist_ok=True)
    log = read_log(log_path)
    plot_loss_acc(log, os.path.join(report_dir, "loss_acc.png"))
    plot_throughput(log, os.path.join(report_dir, "throughput.png"))
    plot_knobs(log, os.path.join(report_dir, "knobs.png"))
    plot_oracle(log, os.path.join(report_dir, "oracle.png"))
    if samples:
        plot_samples(samples, os.path.join(report_dir, "samples.png"), sample_columns)
    path = os.path.join(report_dir, "summary.md")
    with open(path, "w") as f:
        f.write(summary_markdown(log, config, extra))
    return path
