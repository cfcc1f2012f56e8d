"""Time to build one epoch's order for 1.28 M samples.

The benchmark lives in ``vitdata.bench.sampler`` (installed with the package; also ``vitdata bench sampler``);
this script runs it from a checkout: ``python -P benchmarks/bench_sampler.py --help``.
"""
import sys

from vitdata.bench.sampler import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_sampler.py"))
