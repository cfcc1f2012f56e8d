"""``vitdata bench loader``: how many images/s does vitdata deliver against the loaders users would otherwise
run, on the same data, size, dtype and device, in one process?

Six feeds (rows, see :mod:`vitdata.bench.feeds`), each with its ratio to the torch DataLoader (row 4),
measured in the same run; row 1 also gets a per-stage split (:mod:`vitdata.bench.stage_split`).

Timing: ``warmup`` batches, then ``windows`` timed windows of ``steps`` batches; each window ends in a sync
of the consumer's current stream, so work queued for the batches of a window is inside it. A row's
figure is the median of its windows' images/s; the spread is (max - min) / median over the windows.

Cores: by default the run uses the CPUs of its affinity mask, split between DALI threads and vitdata's
source workers with a GPU, and all of them as DataLoader workers for the torch rows
(:class:`~vitdata.bench.common.Parallelism`), so no row oversubscribes the machine.

    python -P benchmarks/bench_loader.py --data ../shared/data/imagenet-samples [--size 224] [--batch-size 256]
        [--steps 10] [--windows 5] [--rows 1,2,3,4,5,6] [--json PATH] [--plot OUT.png]

The record goes to ``--json`` (a file, or a directory for ``<date>-loader.json``), else to
``./benchmarks/results/<device>/<date>-loader.json`` under the current directory.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import time
from typing import Callable, Iterator

from vitdata.bench import record
from vitdata.optional import install_hint, optional_import, require

from .common import DTYPES, Parallelism, RowSkipped, Settings, dali_importable, default_device, load_avg, \
    prepared_data, quiet_dali
from .feeds import BASELINE_ROW, ROW_FUNCS, ROWS


def time_windows(it: Iterator, *, batch_size: int, warmup: int, windows: int, steps: int,
                 on_window: Callable[[int], None] | None = None) -> dict:
    """Pull ``warmup`` batches, then time ``windows`` windows of ``steps`` batches, each ending in a sync of
    the current stream. Returns raw window seconds, per-window images/s, median, min, max and spread."""
    for _ in range(warmup):
        next(it)
    record.sync()
    window_s = []
    for w in range(windows):
        if on_window:
            on_window(w)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(it)
        record.sync()
        window_s.append(time.perf_counter() - t0)
    return summarize(window_s, steps * batch_size)


def summarize(window_s: list[float], images_per_window: int) -> dict:
    rates = [images_per_window / t for t in window_s]
    med = statistics.median(rates)
    return {"window_s": window_s, "images_per_window": images_per_window, "images_per_s_windows": rates,
            "images_per_s": med, "images_per_s_min": min(rates), "images_per_s_max": max(rates),
            "spread_pct": 100.0 * (max(rates) - min(rates)) / med if med > 0 else 0.0}


def add_ratios(rows: list[dict]) -> None:
    """ratio_to_row4 = images_per_s / images_per_s of row 4 (None when row 4 did not run)."""
    base = next((r["images_per_s"] for r in rows if r["row"] == BASELINE_ROW), None)
    for r in rows:
        r["ratio_to_row4"] = r["images_per_s"] / base if base else None


class _WaitTimer:
    """Iterator wrapper recording the seconds each ``next`` blocks (host time; no sync)."""

    def __init__(self, it, waits: list):
        self.it, self.waits = it, waits

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        item = next(self.it)
        self.waits.append(time.perf_counter() - t0)
        return item


def _split_row1(s: Settings, loader, delivered: list, entry: dict) -> dict:
    why = dali_importable()
    if why or loader.backend_name != "dali":
        return {"error": why or f"row 1 ran the {loader.backend_name} backend; the split times DALI graphs"}
    from .stage_split import stage_split

    try:
        return stage_split(s, loader, delivered[s.warmup:] or delivered,
                           statistics.median(entry["window_s"]) / s.steps, entry["wait_s_per_batch_median"])
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def run_loader_bench(s: Settings, rows: list[int], skip: dict[int, str], log=print) -> dict:
    """Run the requested rows one after another (each closed before the next starts)."""
    ran, skipped = [], []
    split = None
    for r in rows:
        name, label = ROWS[r]
        if r in skip:
            skipped.append({"row": r, "name": name, "reason": skip[r]})
            log(f"row {r} ({name}): skipped: {skip[r]}")
            continue
        log(f"row {r} ({name}) ...")
        close = None
        try:
            it, close, details = ROW_FUNCS[r](s)
            waits: list[float] = []
            res = time_windows(_WaitTimer(it, waits), batch_size=s.batch_size, warmup=s.warmup, windows=s.windows,
                               steps=s.steps)
        except Exception as e:
            reason = str(e) if isinstance(e, RowSkipped) else \
                f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            skipped.append({"row": r, "name": name, "reason": reason})
            log(f"row {r} ({name}): {'skipped: ' if isinstance(e, RowSkipped) else ''}{reason}")
            if close:
                with contextlib.suppress(Exception):
                    close()
            continue
        delivered = details.pop("_delivered_ids", None)
        loader = details.pop("_loader", None)
        timed_waits = waits[s.warmup:]
        details["load_avg_1m_after"] = load_avg()
        entry = {"row": r, "name": name, "label": label, **res, "details": details,
                 "wait_s_per_batch_median": statistics.median(timed_waits) if timed_waits else None}
        ran.append(entry)
        on = f", DALI on {details['runs_on']}" if "runs_on" in details else ""
        log(f"row {r} ({name}): {res['images_per_s']:,.0f} images/s (spread {res['spread_pct']:.1f}%{on})")
        close()   # before the stage split, so the row's workers and prefetch do not compete with it
        del it
        gc.collect()
        if r == 1 and loader is not None:
            split = _split_row1(s, loader, delivered, entry)
        del loader
    add_ratios(ran)
    return {"rows": ran, "skipped": skipped, "stage_split_row1": split}


# Row 1's stages in the order printed (see :mod:`vitdata.bench.stage_split`).
STAGES = ("read", "decode", "graph", "kernels", "hand_over", "loader_wall", "consumer_wait")


def format_split(split: dict | None) -> str:
    if not split:
        return ""
    if "error" in split and len(split) == 1:
        return f"row 1 stage split: unavailable ({split['error']})"
    lines = ["row 1 per-stage cost (ms per batch, each stage timed alone; stages overlap in the loader):"]
    for key in STAGES:
        v = split.get(key)
        if not v:
            continue
        if "error" in v:
            lines.append(f"  {key:<14} unavailable: {v['error']}")
        elif v.get("median_s") is not None:
            lines.append(f"  {key:<14} {1000 * v['median_s']:9.2f}   {v.get('how', '')}")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    lines = [f"{'row':<4} {'name':<20} {'images/s':>12} {'spread':>8} {'min..max':>19} {'vs row 4':>9} {'DALI on':>8}",
             "-" * 86]
    by_row = {r["row"]: r for r in result["rows"]}
    skipped = {r["row"]: r for r in result["skipped"]}
    for row in sorted(set(by_row) | set(skipped)):
        if row in by_row:
            r = by_row[row]
            ratio = f"{r['ratio_to_row4']:.2f}x" if r["ratio_to_row4"] is not None else "n/a"
            d = r.get("details", {})
            on = "-" if "runs_on" not in d else (
                "CPU" if d["dali_device_id"] is None else f"GPU {d['dali_device_id']}")
            lines.append(f"{row:<4} {r['name']:<20} {r['images_per_s']:>12,.0f} {r['spread_pct']:>7.1f}% "
                         f"{r['images_per_s_min']:>9,.0f}..{r['images_per_s_max']:<8,.0f} {ratio:>9} {on:>8}")
        else:
            r = skipped[row]
            lines.append(f"{row:<4} {r['name']:<20} {'skipped':>12}  {r['reason']}")
    return "\n".join(lines)


def plot_rows(result: dict, path: str, title: str) -> str:
    """A horizontal bar chart of the rows (median, min..max bars, ratio to row 4) as a PNG at ``path``."""
    matplotlib = require("matplotlib", "vitdata bench loader --plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["rows"], key=lambda r: r["row"])
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [f"({r['row']}) {r['name']}" for r in rows]
    vals = [r["images_per_s"] for r in rows]
    err = [[r["images_per_s"] - r["images_per_s_min"] for r in rows],
           [r["images_per_s_max"] - r["images_per_s"] for r in rows]]
    bars = ax.barh(names, vals, xerr=err, color=["#4c72b0" if r["row"] <= 2 else "#999999" for r in rows])
    for b, r in zip(bars, rows):
        txt = f" {r['images_per_s']:,.0f}" + (f" ({r['ratio_to_row4']:.2f}x)" if r["ratio_to_row4"] else "")
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, txt, va="center", fontsize=8)
    if any(v > 0 for v in vals) and max(vals) / max(min(vals), 1e-9) > 50:
        ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("images/s (median of windows; bars: min..max)")
    skipped = ", ".join(f"({r['row']}) {r['name']}" for r in result["skipped"])
    ax.set_title(title + (f"\nskipped: {skipped}" if skipped else ""), fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _parse_rows(text: str) -> list[int]:
    rows = sorted({int(x) for x in text.split(",") if x.strip()})
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown rows {bad}; rows are 1..6")
    return rows


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from . import feeds

    lo = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0] + "\n\nRows:\n" +
                                 "\n".join(f"  {k}. {v[1]}" for k, v in ROWS.items()) +
                                 "\n\n" + feeds.__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    lo.add_argument("--data", required=True, help="ImageFolder root, dir of .tar shards, or a shard pattern")
    lo.add_argument("--size", type=int, default=224, help="output side in pixels (default 224)")
    lo.add_argument("--batch-size", type=int, default=256)
    lo.add_argument("--steps", type=int, default=10, help="batches per timed window (default 10)")
    lo.add_argument("--windows", type=int, default=5, help="timed windows per row (default 5)")
    lo.add_argument("--warmup", type=int, default=5, help="batches before the first window (default 5)")
    lo.add_argument("--workers", type=int, default=None,
                    help="DataLoader workers of rows 4-5 (default: the usable CPUs)")
    lo.add_argument("--threads", type=int, default=None,
                    help="DALI CPU threads (default: with a GPU the usable CPUs less --source-workers; on CPU all)")
    lo.add_argument("--source-workers", type=int, default=None,
                    help="vitdata's DALI source processes, rows 1-2 with a GPU (default: half the usable CPUs; "
                         "on CPU the source runs in the pipeline thread)")
    lo.add_argument("--dtype", choices=DTYPES, default="float32", help="output dtype of every row")
    lo.add_argument("--device", default=None, help="cuda | cuda:N | cpu (default: cuda when available)")
    lo.add_argument("--rows", type=_parse_rows, default=list(ROWS), help="comma-separated rows to run (default all)")
    lo.add_argument("--skip", type=_parse_rows, default=[], help="comma-separated rows to skip (recorded as such)")
    lo.add_argument("--cycle", type=int, default=None, help="repeat the data K times (default: as needed)")
    lo.add_argument("--patch-size", type=int, default=16, help="PatchErasing cell / rounding of row 1's sizes")
    lo.add_argument("--seed", type=int, default=0)
    lo.add_argument("--json", help="record file or directory (default ./benchmarks/results/<device>/<date>-loader.json)")
    lo.add_argument("--plot", help="bar chart PNG path")
    return lo


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    a = build_parser(prog).parse_args(argv)
    with quiet_dali():
        return _run(a)


def _run(a: argparse.Namespace) -> int:
    import torch

    device = a.device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    if not os.path.exists(a.data.split("{")[0]):
        print(f"no data at {a.data}", file=sys.stderr)
        return 2
    par = Parallelism.resolve(device, a.threads, a.source_workers, a.workers)
    skip: dict[int, str] = {r: "skipped with --skip" for r in a.skip}
    if dali_importable():
        skip.setdefault(3, dali_importable())
    needed = (a.warmup + a.windows * a.steps + 2) * a.batch_size
    with prepared_data(a.data, needed, cycle=a.cycle) as (root, idx, cycle):
        s = Settings(data=a.data, root=root, kind=idx.kind, sources=list(idx.sources), num_samples=len(idx),
                     size=a.size, batch_size=a.batch_size, dtype=a.dtype, device=device, workers=par.workers,
                     threads=par.threads, source_workers=par.source_workers, warmup=a.warmup, windows=a.windows,
                     steps=a.steps, seed=a.seed, cycle=cycle, patch_size=a.patch_size)
        if not s.gpu:
            s.extra["note"] = "no CUDA device: runs the CPU path"
        s.extra["cpus_usable"] = record.usable_cpus()
        s.extra["load_avg_1m_start"] = load_avg()
        print(f"vitdata bench loader: {a.data} ({idx.kind}, {len(idx) // cycle} samples"
              f"{f', cycled x{cycle}' if cycle > 1 else ''}), {a.size}px, batch {a.batch_size}, {a.dtype} on {device}, "
              f"{s.threads} DALI threads / {s.source_workers} source workers / {s.workers} DataLoader workers on "
              f"{s.extra['cpus_usable']} usable CPUs; {a.warmup} warm-up batches + {a.windows} windows x "
              f"{a.steps} batches per row")
        load, cpus = s.extra["load_avg_1m_start"], s.extra["cpus_usable"]
        if load is not None and load > 0.5 * cpus:
            print(f"  note: load average {load:.1f} on {cpus} CPUs before the run: other processes compete for the "
                  "cores, so CPU figures are low and noisy (each row records the load after it ran)")
        result = run_loader_bench(s, a.rows, skip, log=(lambda m: print("  " + m, flush=True)))
        settings = s.record()
    rec = {"settings": settings, **result, "baseline_row": BASELINE_ROW,
              "rows_requested": a.rows, "row_labels": {str(k): v[1] for k, v in ROWS.items()}}
    print()
    print(format_table(result))
    if result["stage_split_row1"]:
        print()
        print(format_split(result["stage_split_row1"]))
    path = record.write_record("loader", rec, a.json)
    print(f"\nrecord: {path}")
    if a.plot and optional_import("matplotlib") is None:
        print(f"plot: skipped, matplotlib is not installed ({install_hint('matplotlib')})")
    elif a.plot:
        env = rec["environment"]
        title = (f"vitdata bench loader: {env.get('gpu') or 'CPU'} ({env.get('cpus_usable')} CPUs), {a.size}px, "
                 f"batch {a.batch_size}, {a.dtype}")
        print(f"plot: {plot_rows(result, a.plot, title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
