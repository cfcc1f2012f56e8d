"""CPU time per image of each route that decodes the crop window (DALI ROI, DALI after a reduced decode, Pillow full
and reduced), at each of the curriculum's sizes, same photos and windows in one process.

The benchmark lives in ``vitdata.bench.decode`` (installed with the package; also ``vitdata bench decode``);
this script runs it from a checkout: ``python -P benchmarks/bench_decode.py --help``.
"""
import sys

from vitdata.bench.decode import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_decode.py"))
