"""Quarantine and replay: step cost with no failure, ms per step that fails in the decoder.

The benchmark lives in ``vitdata.bench.quarantine`` (installed with the package; also ``vitdata bench quarantine``);
this script runs it from a checkout: ``python -P benchmarks/bench_quarantine.py --help``.
"""
import sys

from vitdata.bench.quarantine import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_quarantine.py"))
