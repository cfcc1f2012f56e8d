"""``vitdata bench decode``: what does each route of decoding the crop window cost per image, at each of the
curriculum's sizes, on the same photos and windows in one process?

Routes (CPU time per image, one thread, so the figure does not depend on what else runs on the machine):

=================  ==========================================================================================
dali-roi           DALI's ROI decode of the window (``decoders.image_slice``) + DALI resize: the DALI
                   backend with ``decode_scale`` auto / off
dali-reduced       the source's reduced decode (``pipelines.source.crop_windows``: Pillow at 1/r) + DALI
                   resize over the window's ROI: the DALI backend with ``decode_scale="on"`` on a CPU host
pillow-full        Pillow full decode + ``resize(box=window)``: the torch backend with ``decode_scale="off"``
pillow-reduced     Pillow at 1/r + ``resize(box=window)``: the torch backend with ``decode_scale`` auto / on
dali-levels        the source's choice of level (``crop_windows`` with a levels store built here first,
                   ``vitdata.decode.levels``) + DALI's ROI decode of the level's (or the photo's) JPEG + DALI
                   resize over the window's bounds: the DALI backend with ``decode_levels``
pillow-levels      Pillow decode of the level (or the photo) + ``resize(box=window)``: the torch backend
                   with ``decode_levels`` (and ``decode_scale="off"``)
=================  ==========================================================================================

Each route is timed ``--repeats`` times over the same windows (``vitdata.decode.crop``, seed 0); the figure is
the fastest repeat's CPU time (``time.process_time``: DALI's thread is this process's) / images. The ratios:
dali-reduced / dali-roi, pillow-reduced / pillow-full, dali-levels / dali-roi and pillow-levels / pillow-full at
each size, and each route against itself at the largest size.

    python -P -m vitdata bench decode --data ../shared/data/imagenet-samples [--sizes 64,112,160,224]
        [--images 256] [--repeats 3] [--json PATH]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from vitdata.bench import record

from .common import load_avg, quiet_dali, scratch_dir

ROUTES = ("dali-roi", "dali-reduced", "pillow-full", "pillow-reduced", "dali-levels", "pillow-levels")


def _cpu_ms(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return 1000.0 * best / n


def _dali(batches_fn, names, size: int, n: int, roi: bool):
    from nvidia.dali import fn, pipeline_def, types

    dtypes = {"encoded": types.UINT8, "anchor": types.INT32, "shape": types.INT32, "pixels": types.UINT8,
              "roi_start": types.FLOAT, "roi_end": types.FLOAT}

    @pipeline_def(batch_size=n, num_threads=1, device_id=None, prefetch_queue_depth=1, exec_async=False,
                  exec_pipelined=False)
    def pipe():
        outs = fn.external_source(source=batches_fn, num_outputs=len(names), batch=True,
                                  dtype=[dtypes[k] for k in names], ndim=[3 if k == "pixels" else 1 for k in names],
                                  layout=["HWC" if k == "pixels" else "" for k in names])
        node = dict(zip(names, outs))
        images = node.get("pixels")
        if images is None:
            images = fn.decoders.image_slice(node["encoded"], node["anchor"], node["shape"], device="cpu",
                                             output_type=types.RGB, normalized_anchor=False, normalized_shape=False)
        if roi:
            return fn.resize(images, size=[size, size], roi_start=node["roi_start"], roi_end=node["roi_end"],
                             roi_relative=False, antialias=True)
        return fn.resize(images, size=[size, size], antialias=True)

    p = pipe()
    p.build()
    p.run()
    return p


def measure(datas: list[bytes], size: int, repeats: int, levels: str) -> dict:
    """CPU ms per image of each route at ``size`` over the windows of ``datas`` (positions 0..n-1);
    ``levels``: the folder of their levels store (ids 0..n-1)."""
    from PIL import Image

    from vitdata.decode import decode_rgb, open_scaled, scaled_box
    from vitdata.pipelines.source import CropSpec, _plan, crop_windows

    n = len(datas)
    crop = CropSpec((0.08, 1.0), (3 / 4, 4 / 3), 0, 0, True, 1)
    plans = [_plan(d, k, 0, size, crop) for k, d in enumerate(datas)]
    enc = [np.frombuffer(d, np.uint8) for d in datas]
    anc = [np.array([b.x, b.y], np.int32) for b, _ in plans]
    shp = [np.array([b.w, b.h], np.int32) for b, _ in plans]
    roi_pipe = _dali(lambda: (enc, anc, shp), ("encoded", "anchor", "shape"), size, n, roi=False)
    out = {"dali-roi": _cpu_ms(roi_pipe.run, n, repeats)}
    del roi_pipe
    # dali-reduced: the source's work (windows + reduced decodes) and the ROI decode of the rest + the resize
    win = crop_windows(datas, range(n), 0, size, crop)
    red = [k for k in range(n) if win["decoded"][k]]
    rest = [k for k in range(n) if not win["decoded"][k]]
    px = [win["encoded"][k].reshape(tuple(win["hwc"][k])) for k in red]
    rs, re_ = [win["roi_start"][k] for k in red], [win["roi_end"][k] for k in red]
    cost = 0.0
    if red:
        small = _dali(lambda: (px, rs, re_), ("pixels", "roi_start", "roi_end"), size, len(red), roi=True)
        cost += _cpu_ms(small.run, 1, repeats)
        del small
    if rest:
        full = _dali(lambda: ([enc[k] for k in rest], [anc[k] for k in rest], [shp[k] for k in rest]),
                     ("encoded", "anchor", "shape"), size, len(rest), roi=False)
        cost += _cpu_ms(full.run, 1, repeats)
        del full
    source = _cpu_ms(lambda: crop_windows(datas, range(n), 0, size, crop), 1, repeats)
    out["dali-reduced"] = (cost + source) / n

    def pillow(reduce: bool):
        for d, (box, r) in zip(datas, plans):
            im, f = open_scaled(d, r) if reduce and r > 1 else (decode_rgb(d), 1)
            im.resize((size, size), Image.BILINEAR, box=scaled_box(box, f))

    out["pillow-full"] = _cpu_ms(lambda: pillow(False), n, repeats)
    out["pillow-reduced"] = _cpu_ms(lambda: pillow(True), n, repeats)
    out.update(_levels(datas, plans, size, repeats, levels))
    factors = [r for _, r in plans]
    out["reduced_share"] = sum(f > 1 for f in factors) / n
    out["factors"] = {str(f): factors.count(f) for f in (1, 2, 4, 8)}
    return out


def _levels(datas: list[bytes], plans, size: int, repeats: int, levels: str) -> dict:
    """The two levels routes (module docstring) over the same windows, and the share of windows a level serves."""
    from PIL import Image

    from vitdata.decode import decode_rgb, scaled_box
    from vitdata.decode.levels import Levels
    from vitdata.pipelines.source import CropSpec, crop_windows

    n, store = len(datas), Levels(levels)
    crop = CropSpec((0.08, 1.0), (3 / 4, 4 / 3), 0, 0, False, 1, levels)
    win = crop_windows(datas, range(n), 0, size, crop, sids=range(n))
    pipe = _dali(lambda: tuple(list(win[k]) for k in ("encoded", "anchor", "shape", "roi_start", "roi_end")),
                 ("encoded", "anchor", "shape", "roi_start", "roi_end"), size, n, roi=True)
    cost = _cpu_ms(pipe.run, n, repeats)
    del pipe
    source = _cpu_ms(lambda: crop_windows(datas, range(n), 0, size, crop, sids=range(n)), n, repeats)
    chosen = [store.factor(k, box, size) for k, (box, _) in enumerate(plans)]

    def pillow():
        for k, (d, (box, _)) in enumerate(zip(datas, plans)):
            f = chosen[k]
            decode_rgb(store.data(k, f) if f > 1 else d).resize((size, size), Image.BILINEAR, box=scaled_box(box, f))

    return {"dali-levels": cost + source, "pillow-levels": _cpu_ms(pillow, n, repeats),
            "level_share": sum(f > 1 for f in chosen) / n}


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="ImageFolder root (JPEG photos)")
    p.add_argument("--sizes", default="64,112,160,224", help="comma-separated output sides")
    p.add_argument("--images", type=int, default=256, help="photos to use (the first N of the index)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-note", default=None, help="how the data was obtained (recorded)")
    p.add_argument("--json", help="record file or directory")
    a = p.parse_args(argv)
    from vitdata.data.index import open_index
    from vitdata.data.reader import SampleReader

    from vitdata.decode.levels import Levels, build_levels

    sizes = sorted({int(x) for x in a.sizes.split(",")})
    with scratch_dir() as tmp:   # the index and levels built here never land in the user's cache
        idx = open_index(a.data)
        reader = SampleReader(idx)
        datas = [reader.read(i) for i in range(min(a.images, len(idx)))]
        levels = build_levels(iter(datas), len(datas), tmp, "bench-decode")
        settings = {"data": os.path.abspath(a.data), "images": len(datas), "sizes": sizes, "repeats": a.repeats,
                    "threads": 1, "clock": "process CPU time", "load_avg_1m_start": load_avg(),
                    "levels_bytes": Levels(levels).meta["bytes"], "photo_bytes": sum(map(len, datas))}
        if a.data_note:
            settings["data_note"] = a.data_note
        with quiet_dali():
            rows = {size: measure(datas, size, a.repeats, levels) for size in sizes}
    top = max(sizes)
    for size, r in rows.items():
        r["dali_reduced_vs_roi"] = r["dali-reduced"] / r["dali-roi"]
        r["pillow_reduced_vs_full"] = r["pillow-reduced"] / r["pillow-full"]
        r["dali_levels_vs_roi"] = r["dali-levels"] / r["dali-roi"]
        r["pillow_levels_vs_full"] = r["pillow-levels"] / r["pillow-full"]
        r["vs_largest"] = {k: r[k] / rows[top][k] for k in ROUTES}
    print(f"vitdata bench decode: {a.data}, {len(datas)} photos, CPU ms per image (one thread, best of {a.repeats})")
    print(f"{'size':>5} {'reduced':>8} {'level':>6} " + " ".join(f"{k:>15}" for k in ROUTES) + f" {'dali on/auto':>13} "
          f"{'torch auto/off':>15} {'dali levels':>12} {'torch levels':>13}")
    for size, r in rows.items():
        print(f"{size:>5} {100 * r['reduced_share']:>7.0f}% {100 * r['level_share']:>5.0f}% " + " ".join(
            f"{r[k]:>8.2f} ({r['vs_largest'][k]:.2f}x)" for k in ROUTES)
            + f" {r['dali_reduced_vs_roi']:>13.2f} {r['pillow_reduced_vs_full']:>15.2f}"
            + f" {r['dali_levels_vs_roi']:>12.2f} {r['pillow_levels_vs_full']:>13.2f}")
    settings["load_avg_1m_end"] = load_avg()
    data = os.path.basename(os.path.normpath(a.data))
    path = record.write_record("decode", {"settings": settings, "sizes": {str(k): v for k, v in rows.items()},
                                             "headline": _headline(rows, top, data)}, a.json)
    print(f"record: {path}")
    return 0


def _headline(rows: dict, top: int, data: str) -> list[dict]:
    """The README table's lines: each route's cost at the largest size and how it falls with the size."""
    sizes = sorted(rows)
    out = []
    for k in ROUTES:
        falls = " / ".join(f"{rows[z]['vs_largest'][k]:.2f}" for z in sizes)
        out.append({"measured": f"decode {k} on {data}: CPU ms per image, one thread",
                    "figure": f"{rows[top][k]:.2f} ms at {top} px",
                    "compared": f"at {'/'.join(map(str, sizes))} px: {falls} of {top} px"})
    for z in sizes:
        r = rows[z]
        out.append({"measured": f"decode on {data} at {z} px ({100 * r['reduced_share']:.0f}% of windows reducible)",
                    "figure": f"dali-reduced {r['dali-reduced']:.2f} vs dali-roi {r['dali-roi']:.2f} ms; "
                              f"pillow-reduced {r['pillow-reduced']:.2f} vs pillow-full {r['pillow-full']:.2f} ms",
                    "compared": f"{r['dali_reduced_vs_roi']:.2f}x (DALI on/auto), "
                                f"{r['pillow_reduced_vs_full']:.2f}x (torch auto/off)"})
        out.append({"measured": f"decode on {data} at {z} px with levels ({100 * r['level_share']:.0f}% of windows "
                                f"read a level)",
                    "figure": f"dali-levels {r['dali-levels']:.2f} vs dali-roi {r['dali-roi']:.2f} ms; "
                              f"pillow-levels {r['pillow-levels']:.2f} vs pillow-full {r['pillow-full']:.2f} ms",
                    "compared": f"{r['dali_levels_vs_roi']:.2f}x (DALI levels/none), "
                                f"{r['pillow_levels_vs_full']:.2f}x (torch levels/none)"})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
