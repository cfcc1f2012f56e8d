"""``vitdata bench loader``: how many images/s does vitdata deliver against the loaders users would otherwise
run, on the same data, size, dtype and device, in one process?

Seven feeds (rows, see :mod:`vitdata.bench.feeds`), each with its ratio to the torch DataLoader (row 4),
measured in the same run (row 1 also against row 7, the same augmentations run the timm way); rows 1 and 2
also get a per-stage split (:mod:`vitdata.bench.stage_split`). With ``--sizes`` every row runs at each
size on the same data in one run, and the record gives each row's cost per image at each size against
its cost at the largest (``cost_vs_largest``): how the cost falls with the curriculum's image size.

Timing: ``warmup`` batches, then ``windows`` timed windows of ``steps`` batches; each window ends in a sync
of the consumer's current stream, so work queued for the batches of a window is inside it. A row's
figure is the median of its windows' images/s; the spread is (max - min) / median over the windows.

Cores: by default the run uses the CPUs of its affinity mask, split between DALI threads and vitdata's
source workers with a GPU, and all of them as DataLoader workers for the torch rows
(:class:`~vitdata.bench.common.Parallelism`), so no row oversubscribes the machine.

    python -P benchmarks/bench_loader.py --data ../shared/data/imagenet-samples [--size 224 | --sizes 64,112,160,224]
        [--batch-size 256] [--steps 10] [--windows 5] [--rows 1,2,3,4,5,6,7] [--decode-scale auto|on|off] [--json PATH]
        [--plot OUT.png]

The record goes to ``--json`` (a file, or a directory for ``<date>-loader.json``), else to
``./benchmarks/results/<device>/<date>-loader.json`` under the current directory.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Iterator

from vitdata.bench import record
from vitdata.optional import install_hint, optional_import, require

from .common import DTYPES, Parallelism, RowSkipped, Settings, dali_importable, default_device, load_avg, \
    prepared_data, quiet_dali
from .feeds import AUGMENT_BASELINE_ROW, BASELINE_ROW, ROW_FUNCS, ROWS


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
    """ratio_to_row4 = images_per_s / images_per_s of row 4 at the same size (None when row 4 did not run);
    row 1 also gets ratio_to_row7 (the same augmentations, run the timm way)."""
    for r in rows:
        same = {o["row"]: o["images_per_s"] for o in rows if o.get("size") == r.get("size")}
        base = same.get(BASELINE_ROW)
        r["ratio_to_row4"] = r["images_per_s"] / base if base else None
        if r["row"] == 1:
            aug = same.get(AUGMENT_BASELINE_ROW)
            r["ratio_to_row7"] = r["images_per_s"] / aug if aug else None


def add_costs(rows: list[dict]) -> None:
    """cost_per_image_ms = 1000 / images_per_s, and cost_vs_largest = that cost / the same row's cost at the
    largest size it ran at (1.0 there): how a row's cost falls with the image size."""
    for r in rows:
        r["cost_per_image_ms"] = 1000.0 / r["images_per_s"] if r["images_per_s"] > 0 else None
    for r in rows:
        mine = [o for o in rows if o["row"] == r["row"] and o.get("cost_per_image_ms")]
        top = max(mine, key=lambda o: o.get("size") or 0, default=None)
        r["cost_vs_largest"] = (r["cost_per_image_ms"] / top["cost_per_image_ms"]
                                if top and r.get("cost_per_image_ms") else None)


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


def _split_vitdata(s: Settings, loader, delivered: list, entry: dict) -> dict:
    why = dali_importable()
    if why or loader.backend_name != "dali":
        return {"error": why or f"row {entry['row']} ran the {loader.backend_name} backend; the split times DALI graphs"}
    from .stage_split import stage_split

    try:
        return stage_split(s, loader, delivered[s.warmup:] or delivered,
                           statistics.median(entry["window_s"]) / s.steps, entry["wait_s_per_batch_median"],
                           with_kernels=entry["row"] == 1)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def run_loader_bench(s: Settings, rows: list[int], skip: dict[int, str], log=print) -> dict:
    """Run the requested rows one after another (each closed before the next starts)."""
    ran, skipped = [], []
    split = None
    for r in rows:
        name, label = ROWS[r]
        if r in skip:
            skipped.append({"row": r, "name": name, "reason": skip[r], "size": s.size})
            log(f"row {r} ({name}): skipped: {skip[r]}")
            continue
        log(f"row {r} ({name}) at {s.size} px ...")
        close = None
        try:
            it, close, details = ROW_FUNCS[r](s)
            waits: list[float] = []
            res = time_windows(_WaitTimer(it, waits), batch_size=s.batch_size, warmup=s.warmup, windows=s.windows,
                               steps=s.steps)
        except Exception as e:
            reason = str(e) if isinstance(e, RowSkipped) else \
                f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            skipped.append({"row": r, "name": name, "reason": reason, "size": s.size})
            log(f"row {r} ({name}): {'skipped: ' if isinstance(e, RowSkipped) else ''}{reason}")
            if close:
                with contextlib.suppress(Exception):
                    close()
            continue
        delivered = details.pop("_delivered_ids", None)
        loader = details.pop("_loader", None)
        timed_waits = waits[s.warmup:]
        details["load_avg_1m_after"] = load_avg()
        entry = {"row": r, "name": name, "label": label, "size": s.size, **res, "details": details,
                 "wait_s_per_batch_median": statistics.median(timed_waits) if timed_waits else None}
        ran.append(entry)
        on = f", DALI on {details['runs_on']}" if "runs_on" in details else ""
        log(f"row {r} ({name}): {res['images_per_s']:,.0f} images/s (spread {res['spread_pct']:.1f}%{on})")
        close()   # before the stage split, so the row's workers and prefetch do not compete with it
        del it
        gc.collect()
        if r in (1, 2) and loader is not None:
            entry["stage_split"] = _split_vitdata(s, loader, delivered, entry)
            split = entry["stage_split"] if r == 1 else split
        del loader
    add_ratios(ran)
    return {"rows": ran, "skipped": skipped, "stage_split_row1": split}


def run_sizes(s: Settings, sizes: list[int], rows: list[int], skip: dict[int, str], log=print) -> dict:
    """:func:`run_loader_bench` at each of ``sizes`` (largest first) on the same data; rows of all sizes in
    one list (each with its ``size``), ratios within a size, costs across sizes (:func:`add_costs`)."""
    import dataclasses

    merged: dict = {"rows": [], "skipped": [], "stage_split_row1": None}
    for size in sorted(sizes, reverse=True):
        res = run_loader_bench(dataclasses.replace(s, size=size), rows, skip, log)
        merged["rows"] += res["rows"]
        merged["skipped"] += res["skipped"]
        merged["stage_split_row1"] = merged["stage_split_row1"] or res["stage_split_row1"]
    add_costs(merged["rows"])
    return merged


# The vitdata rows' stages in the order printed (see :mod:`vitdata.bench.stage_split`); kernels: row 1 only.
STAGES = ("read", "decode", "crop_resize", "augment", "kernels", "hand_over", "loader_wall", "consumer_wait")


def format_split(split: dict | None, title: str = "row 1") -> str:
    if not split:
        return ""
    if "error" in split and len(split) == 1:
        return f"{title} stage split: unavailable ({split['error']})"
    lines = [f"{title} per-stage cost (ms per batch, each stage timed alone; stages overlap in the loader):"]
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
    sizes = sorted({r.get("size") for r in result["rows"] + result["skipped"]}, key=lambda v: -(v or 0))
    return "\n\n".join(_format_size(result, size, len(sizes) > 1) for size in sizes)


def format_costs(result: dict) -> str:
    """Each row's cost per image at each size, and its ratio to the row's cost at the largest size."""
    sizes = sorted({r["size"] for r in result["rows"] if r.get("size")})
    if len(sizes) < 2:
        return ""
    head = f"{'row':<4} {'name':<20} " + " ".join(f"{f'{z} px':>17}" for z in sizes)
    lines = ["cost per image (ms, and vs the row's largest size):", head, "-" * len(head)]
    for row in sorted({r["row"] for r in result["rows"]}):
        by = {r["size"]: r for r in result["rows"] if r["row"] == row}
        cells = [f"{by[z]['cost_per_image_ms']:>8.3f} ({by[z]['cost_vs_largest']:.2f}x)" if z in by and
                 by[z].get("cost_vs_largest") is not None else f"{'-':>17}" for z in sizes]
        lines.append(f"{row:<4} {ROWS[row][0]:<20} " + " ".join(cells))
    return "\n".join(lines)


def _format_size(result: dict, size, titled: bool) -> str:
    lines = [f"{'row':<4} {'name':<20} {'images/s':>12} {'spread':>8} {'min..max':>19} {'vs row 4':>9} {'DALI on':>8}",
             "-" * 86]
    if titled:
        lines.insert(0, f"{size} px:")
    by_row = {r["row"]: r for r in result["rows"] if r.get("size") == size}
    skipped = {r["row"]: r for r in result["skipped"] if r.get("size") == size}
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
        raise argparse.ArgumentTypeError(f"unknown rows {bad}; rows are 1..{max(ROWS)}")
    return rows


def _parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    if not sizes or min(sizes) < 8:
        raise argparse.ArgumentTypeError(f"sizes must be ints >= 8, got {text!r}")
    return sizes


def build_levels_for(idx, root: str) -> dict:
    """Build ``idx``'s levels store under ``root`` on all usable CPUs; what the record says of it."""
    import time

    from vitdata.data.reader import SampleReader
    from vitdata.loader.levels import build_store

    t0, n, step = time.perf_counter(), len(idx), max(5000, len(idx) // 10)

    def progress(done: int) -> None:   # a large dataset takes minutes (about 2 ms per photo per core)
        if done % step == 0 and done < n:
            rate = done / (time.perf_counter() - t0)
            print(f"  levels: {done:,} of {n:,} photos, about {(n - done) / rate:.0f} s left "
                  "(--decode-levels off skips the store)", flush=True)

    path = build_store(idx, SampleReader(idx), root, workers=record.usable_cpus(), progress=progress)
    with open(os.path.join(path, "meta.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    photos = int(idx.length.sum())
    return {"store": path, "build_s": round(time.perf_counter() - t0, 3), "samples": meta["samples"],
            "with_level": meta["with_level"], "quality": meta["quality"],
            "bytes": meta["bytes"], "photo_bytes": photos,
            "extra_storage": round(sum(meta["bytes"].values()) / max(1, photos), 4)}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from . import feeds

    lo = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0] + "\n\nRows:\n" +
                                 "\n".join(f"  {k}. {v[1]}" for k, v in ROWS.items()) +
                                 "\n\n" + feeds.__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    lo.add_argument("--data", required=True, help="ImageFolder root, dir of .tar shards, or a shard pattern")
    lo.add_argument("--size", type=int, default=224, help="output side in pixels (default 224)")
    lo.add_argument("--sizes", type=_parse_sizes, default=None,
                    help="comma-separated output sides, each run in turn on the same data (e.g. 64,112,160,224)")
    lo.add_argument("--data-note", default=None,
                    help="how the data was obtained (recorded in the settings, e.g. for data outside the repo)")
    lo.add_argument("--decode-scale", choices=("auto", "on", "off"), default="auto",
                    help="rows 1-2: LoaderConfig.decode_scale (default auto: DALI's ROI decode on CPU)")
    lo.add_argument("--decode-levels", choices=("build", "off"), default="build",
                    help="rows 1-2: build the data's levels store first (vitdata levels; its build time and size "
                         "are recorded) and read it (LoaderConfig.decode_levels), or not (off)")
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
        sizes = a.sizes or [a.size]
        s = Settings(data=a.data, root=root, kind=idx.kind, sources=list(idx.sources), num_samples=len(idx),
                     size=max(sizes), batch_size=a.batch_size, dtype=a.dtype, device=device, workers=par.workers,
                     threads=par.threads, source_workers=par.source_workers, warmup=a.warmup, windows=a.windows,
                     steps=a.steps, seed=a.seed, cycle=cycle, patch_size=a.patch_size)
        if not s.gpu:
            s.extra["note"] = "no CUDA device: runs the CPU path"
        s.extra["cpus_usable"] = record.usable_cpus()
        s.extra["sizes"] = sizes
        s.extra["decode_scale"] = a.decode_scale
        levels = tempfile.mkdtemp(prefix="vitdata-levels-") if a.decode_levels == "build" else None
        if levels is not None:
            s.extra["decode_levels"] = build_levels_for(idx, levels)
            print(f"  levels: {json.dumps(s.extra['decode_levels'])}", flush=True)
        if a.data_note:
            s.extra["data_note"] = a.data_note
        s.extra["load_avg_1m_start"] = load_avg()
        print(f"vitdata bench loader: {a.data} ({idx.kind}, {len(idx) // cycle} samples"
              f"{f', cycled x{cycle}' if cycle > 1 else ''}), {'/'.join(map(str, sizes))} px, batch {a.batch_size}, {a.dtype} on {device}, "
              f"{s.threads} DALI threads / {s.source_workers} source workers / {s.workers} DataLoader workers on "
              f"{s.extra['cpus_usable']} usable CPUs; {a.warmup} warm-up batches + {a.windows} windows x "
              f"{a.steps} batches per row")
        load, cpus = s.extra["load_avg_1m_start"], s.extra["cpus_usable"]
        if load is not None and load > 0.5 * cpus:
            print(f"  note: load average {load:.1f} on {cpus} CPUs before the run: other processes compete for the "
                  "cores, so CPU figures are low and noisy (each row records the load after it ran)")
        try:
            result = run_sizes(s, sizes, a.rows, skip, log=(lambda m: print("  " + m, flush=True)))
        finally:
            if levels is not None:
                shutil.rmtree(levels, ignore_errors=True)
        settings = s.record()
    rec = {"settings": settings, **result, "baseline_row": BASELINE_ROW,
              "rows_requested": a.rows, "row_labels": {str(k): v[1] for k, v in ROWS.items()}}
    print()
    print(format_table(result))
    if len(sizes) > 1:
        print()
        print(format_costs(result))
    for r in result["rows"]:
        if r.get("stage_split"):
            print()
            print(format_split(r["stage_split"], f"row {r['row']} ({r['name']}) at {r['size']} px"))
    path = record.write_record("loader", rec, a.json)
    print(f"\nrecord: {path}")
    if a.plot and optional_import("matplotlib") is None:
        print(f"plot: skipped, matplotlib is not installed ({install_hint('matplotlib')})")
    elif a.plot:
        env = rec["environment"]
        title = (f"vitdata bench loader: {env.get('gpu') or 'CPU'} ({env.get('cpus_usable')} CPUs), {max(sizes)}px, "
                 f"batch {a.batch_size}, {a.dtype}")
        top = {"rows": [r for r in result["rows"] if r["size"] == max(sizes)],
               "skipped": [r for r in result["skipped"] if r["size"] == max(sizes)]}
        print(f"plot: {plot_rows(top, a.plot, title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
