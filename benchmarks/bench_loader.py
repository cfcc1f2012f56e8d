"""How many images/s does vitdata deliver against the loaders users would otherwise run, on the same data?

Thin wrapper: the logic is ``vitdata.bench`` (installed with the package, also ``vitdata bench loader``).
Rows, timing and the record are described there.

    python benchmarks/bench_loader.py --data ../shared/data/imagenet-samples --size 224 --batch-size 32 \
        [--steps 10] [--workers 2] [--threads 2] [--json OUT] [--plot OUT.png]
"""
from __future__ import annotations

import sys

from vitdata.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["loader", *sys.argv[1:]], prog="bench_loader.py"))
