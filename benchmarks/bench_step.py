"""Data-wait fraction of a timm ViT training step fed by vitdata vs a synthetic batch.

The benchmark lives in ``vitdata.bench.step`` (installed with the package; also ``vitdata bench step``);
this script runs it from a checkout: ``python -P benchmarks/bench_step.py --help``.
"""
import sys

from vitdata.bench.step import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_step.py"))
