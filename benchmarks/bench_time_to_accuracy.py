"""Each recipe's time to the baseline's final top-1, same model, optimiser, epochs and data.

The benchmark lives in ``vitdata.bench.time_to_accuracy`` (installed with the package; also ``vitdata bench
time-to-accuracy`` or ``vitdata bench t2a``); this script runs it from a checkout:
``python -P benchmarks/bench_time_to_accuracy.py --help``.
"""
import sys

from vitdata.bench.time_to_accuracy import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_time_to_accuracy.py"))
