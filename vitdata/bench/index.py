"""How fast is the sample index? Build time on the CIFAR-10 shards (target < 5 s on 2 cores) and random
reads from the page cache (target >= 50,000 samples/s). One process; prints the figures and the ratio
to each target; writes a JSON record.

    vitdata bench index [--data ../shared/data/cifar10] [--reads 200000] [--repeats 3] [--json PATH]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from vitdata.bench import record
from vitdata.data.reader import SampleReader
from vitdata.data.index import build_index

from .common import shared_data
BUILD_TARGET_S, READ_TARGET = 5.0, 50_000


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=shared_data("cifar10"), help="ImageFolder root or tar shards")
    p.add_argument("--reads", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="record file or directory (default ./benchmarks/results/<device>/<date>-index.json)")
    a = p.parse_args(argv)
    if not os.path.exists(a.data.split("{")[0]):
        print(f"no data at {a.data}", file=sys.stderr)
        return 2
    idx = build_index(a.data)  # warm the page cache once
    build = record.measure(lambda: build_index(a.data), warmup=0, repeats=a.repeats)
    reader = SampleReader(idx)
    ids = np.random.default_rng(0).integers(0, len(idx), a.reads).tolist()
    read = reader.read

    def read_all():
        for i in ids:
            read(i)

    reads = record.measure(read_all, warmup=1, repeats=a.repeats, items=a.reads)
    print(f"index build : {build['median_s']:.3f} s for {len(idx)} samples in {len(idx.sources)} files "
          f"(min {build['min_s']:.3f}, max {build['max_s']:.3f}); target < {BUILD_TARGET_S} s: "
          f"{BUILD_TARGET_S / build['median_s']:.1f}x under budget")
    print(f"random reads: {reads['per_s']:,.0f} samples/s (median of {a.repeats} x {a.reads}); "
          f"target >= {READ_TARGET:,}: ratio {reads['per_s'] / READ_TARGET:.1f}x")
    path = record.write_record("index", {
        "settings": {"data": os.path.abspath(a.data), "samples": len(idx), "files": len(idx.sources),
                     "reads": a.reads, "repeats": a.repeats},
        "build": build, "reads": reads,
        "targets": {"build_s": BUILD_TARGET_S, "reads_per_s": READ_TARGET},
        "headline": [
            {"measured": f"index build, {len(idx):,} samples in {len(idx.sources)} files",
             "figure": f"{build['median_s']:.2f} s", "compared": f"{BUILD_TARGET_S / build['median_s']:.1f}x under the {BUILD_TARGET_S:g} s target"},
            {"measured": "random sample reads from the page cache (pread)",
             "figure": f"{reads['per_s']:,.0f} samples/s", "compared": f"{reads['per_s'] / READ_TARGET:.1f}x the {READ_TARGET:,} target"}],
        "ratios": {"build_budget_over_measured": BUILD_TARGET_S / build["median_s"],
                   "reads_over_target": reads["per_s"] / READ_TARGET}}, a.json)
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
