"""What fraction of a ViT training step waits for data when vitdata feeds it, against a synthetic batch?

Thin wrapper: the logic is ``vitdata.bench`` (installed with the package, also ``vitdata bench step``).

    python benchmarks/bench_step.py --data ../shared/data/imagenet-samples --model vit_small_patch16_224 \
        [--size 224] [--batch-size 256] [--steps 30] [--loader curriculum|plain] [--json OUT]
    # CPU smoke run: --model vit_tiny_patch16_224 --size 64 --batch-size 8 --steps 5
"""
from __future__ import annotations

import sys

from vitdata.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["step", *sys.argv[1:]], prog="bench_step.py"))
