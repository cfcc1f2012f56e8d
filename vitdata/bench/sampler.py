"""How long does the sampler take to build one epoch's order for an ImageNet-sized index?

Times ``Sampler.epoch_ids`` (the global order plus this rank's slice) for the uniform plan and for a
weighted plan (systematic resampling of N draws, then a shuffle), at N = 1,281,167 by default. Every call
builds a new epoch, so nothing is served from the sampler's cache. One warm-up, then the median and spread
of ``--repeats`` builds. Target: well under 1 s on the 2-core CI machine. Writes a JSON record.

    vitdata bench sampler [--num-samples 1281167] [--world-size 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np

from vitdata.bench import record
from vitdata.data.sampler import EpochPlan, Sampler

TARGET_S = 1.0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=1_281_167)
    p.add_argument("--batch-size", type=int, default=256, help="per-rank batch")
    p.add_argument("--world-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="record file or directory (default ./benchmarks/results/<device>/<date>-sampler.json)")
    a = p.parse_args(argv)

    n = a.num_samples
    sampler = Sampler(n, a.batch_size, seed=0, rank=0, world_size=a.world_size)
    epochs = itertools.count()
    results = {}
    for mode in ("uniform", "weighted"):
        if mode == "weighted":
            sampler.set_plan(EpochPlan(weights=np.random.default_rng(0).gamma(0.5, size=n)))
        results[mode] = r = record.measure(lambda: sampler.epoch_ids(next(epochs)), warmup=1, repeats=a.repeats)
        print(f"{mode:>8}: epoch order for N={n:,} (world {a.world_size} x batch {a.batch_size}): median "
              f"{r['median_s'] * 1e3:.1f} ms (min {r['min_s'] * 1e3:.1f}, max {r['max_s'] * 1e3:.1f}; "
              f"{a.repeats} runs); target < {TARGET_S:.0f} s: {TARGET_S / r['median_s']:.0f}x under")
    path = record.write_record("sampler", {
        "settings": {"num_samples": n, "batch_size": a.batch_size, "world_size": a.world_size, "repeats": a.repeats},
        **results, "targets": {"build_s": TARGET_S},
        "headline": [{"measured": f"epoch order, {mode}, N={n:,} (world {a.world_size} x batch {a.batch_size})",
                      "figure": f"{results[mode]['median_s'] * 1e3:.0f} ms",
                      "compared": f"{results[mode]['median_s'] / TARGET_S:.3f}x the {TARGET_S:g} s target"}
                     for mode in results]}, a.json)
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
