"""DALI backend vs torch backend images/s, full augmentation.

The benchmark lives in ``vitdata.bench.loader_backends`` (installed with the package; also ``vitdata bench loader-backends``);
this script runs it from a checkout: ``python -P benchmarks/bench_loader_backends.py --help``.
"""
import sys

from vitdata.bench.loader_backends import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_loader_backends.py"))
