"""CPU time per PNG that the PNG data check adds (epoch 0, later epochs) against DALI's and Pillow's decode of the
same file, in one process.

The benchmark lives in ``vitdata.bench.png_check`` (installed with the package; also ``vitdata bench png-check``);
this script runs it from a checkout: ``python -P benchmarks/bench_png_check.py --help``.
"""
import sys

from vitdata.bench.png_check import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_png_check.py"))
