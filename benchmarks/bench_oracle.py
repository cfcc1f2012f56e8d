"""Oracle report() overhead per step; next-epoch plan + order.

The benchmark lives in ``vitdata.bench.oracle`` (installed with the package; also ``vitdata bench oracle``);
this script runs it from a checkout: ``python -P benchmarks/bench_oracle.py --help``.
"""
import sys

from vitdata.bench.oracle import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_oracle.py"))
