"""GB/s of the low-pass crop and PatchErasing vs torch.fft and timm's RandomErasing; percent of the GPU's peak bandwidth.

The benchmark lives in ``vitdata.bench.kernels`` (installed with the package; also ``vitdata bench kernels``);
this script runs it from a checkout: ``python -P benchmarks/bench_kernels.py --help``.
"""
import sys

from vitdata.bench.kernels import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/bench_kernels.py"))
