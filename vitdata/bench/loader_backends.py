"""Question: on this CPU machine, how many training images per second does the DALI backend deliver
compared with the torch backend (DataLoader, 2 workers), with the full augmentation at 224 px?

Both backends read the same index of real photos (``../shared/data/imagenet-samples`` by default) through
the same sampler, with random-resized crop, flip, RandAugment (n=2, m=9) and normalisation to float32
NCHW, DALI with ``--threads`` CPU threads and its source in the pipeline thread (``--dali-workers 0``),
torch with ``--workers`` DataLoader workers. Each repeat times whole epochs after one warm-up epoch; the
loader is built once per backend, and the timed repeats alternate between the backends. Prints images/s
(median and spread of the repeats), the ratio of the medians and the ratio of each interleaved pair,
and writes a JSON record to ``./benchmarks/results/cpu/<date>-loader-backends.json`` (or ``--out``).

    vitdata bench loader-backends [--data DIR] [--epochs 2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from vitdata.bench import record

from .common import shared_data


def make_loader(backend: str, args):
    from vitdata.loader import LoaderConfig, create_loader
    from vitdata.loader.config import AugmentConfig

    cfg = LoaderConfig(data=args.data, batch_size=args.batch_size, image_size=args.image_size, backend=backend,
                       num_threads=args.threads, prefetch=2, seed=0,
                       num_workers=args.dali_workers if backend == "dali" else args.workers,
                       augment=AugmentConfig(randaug_magnitude=9.0, randaug_num_ops=2))
    t0 = time.perf_counter()
    loader = create_loader(cfg)
    loader.set_epoch(0)
    n_warm = sum(len(b.ids) for b in loader)   # warm-up: worker start, first decodes
    return loader, {"backend": backend, "warmup_images": n_warm, "warmup_seconds": time.perf_counter() - t0,
                    "repeats": []}


def time_epochs(loader, result: dict, epochs: int) -> float:
    """Time ``epochs`` more whole epochs of ``loader``; appends the repeat to ``result``."""
    n, t = 0, time.perf_counter()
    for _ in range(epochs):
        loader.set_epoch(loader.epoch + 1)
        for b in loader:
            n += len(b.ids)
    dt = time.perf_counter() - t
    result["repeats"].append({"images": n, "seconds": dt, "images_per_s": n / dt})
    return n / dt


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--data", default=shared_data("imagenet-samples"))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="DALI CPU threads")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the torch backend")
    p.add_argument("--dali-workers", type=int, default=0,
                   help="DALI source workers (0: the source runs in the pipeline thread, vitdata's CPU choice)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", default="dali,torch")
    p.add_argument("--json", "--out", dest="out", default=None,
                   help="record file or directory (default ./benchmarks/results/cpu/<date>-loader-backends.json)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.data):
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    results, loaders = {}, {}
    load_before = os.getloadavg()
    backends = args.backends.split(",")
    try:
        for backend in backends:
            loaders[backend], results[backend] = make_loader(backend, args)
        # Repeats alternate between the backends, so a change in the machine's load hits both alike;
        # the idle loader's workers and threads wait without using a core.
        pair_ratios = []
        for _ in range(args.repeats):
            ips = {b: time_epochs(loaders[b], results[b], args.epochs) for b in backends}
            if "dali" in ips and "torch" in ips:
                pair_ratios.append(ips["dali"] / ips["torch"])
    finally:
        for ld in loaders.values():
            ld.close()
    for backend, r in results.items():
        ips = [x["images_per_s"] for x in r["repeats"]]
        r.update(median_images_per_s=statistics.median(ips), min_images_per_s=min(ips), max_images_per_s=max(ips))
        print(f"{backend:>6}: {r['median_images_per_s']:8.1f} img/s (median of {args.repeats}; "
              f"min {r['min_images_per_s']:.1f}, max {r['max_images_per_s']:.1f})", flush=True)
    ratio = None
    if "dali" in results and "torch" in results:
        ratio = results["dali"]["median_images_per_s"] / results["torch"]["median_images_per_s"]
        print(f" ratio: {ratio:.2f}x (dali / torch, medians); per interleaved repeat: "
              f"{', '.join(f'{x:.2f}' for x in pair_ratios)}")
    rec = {"question": "DALI backend vs torch backend images/s on CPU, full augmentation",
              # other processes share the cores: the load average says how busy they were
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": results,
              "ratio_dali_over_torch": ratio, "ratio_per_repeat": pair_ratios if ratio else None,
              "headline": [{"measured": f"loader, {b} backend, full augmentation, {args.image_size} px, batch "
                                        f"{args.batch_size}, " + (f"source in-thread / {args.threads} threads"
                                                                  if b == "dali" and args.dali_workers == 0 else
                                                                  f"{args.dali_workers} source workers / {args.threads} "
                                                                  f"threads" if b == "dali" else
                                                                  f"{args.workers} workers"),
                            "figure": f"{r['median_images_per_s']:,.0f} images/s",
                            "compared": (f"{ratio:.2f}x torch backend (target 1.5x)" if b == "dali" and ratio
                                         else "baseline")} for b, r in results.items()]}
    out = record.write_record("loader-backends", rec, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
