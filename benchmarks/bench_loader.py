"""Images/s of vitdata vs plain DALI, the torch DataLoader, timm and a synthetic ceiling, same data and run; row 1's per-stage split.

The benchmark lives in ``vitdata.bench.loader`` (installed with the package; also ``vitdata bench loader``);
this script runs it from a checkout: ``python -P benchmarks/bench_loader.py --help``.
"""
import sys

from vitdata.bench.loader import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_loader.py"))
