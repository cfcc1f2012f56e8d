"""Sample index build time and random reads/s.

The benchmark lives in ``vitdata.bench.index`` (installed with the package; also ``vitdata bench index``);
this script runs it from a checkout: ``python -P benchmarks/bench_index.py --help``.
"""
import sys

from vitdata.bench.index import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_index.py"))
