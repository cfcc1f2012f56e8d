"""``vitdata bench WHAT``: one benchmark per question, each a module here with its own ``main(argv, prog)``.

This package is the installed home of the benchmarks; ``benchmarks/bench_<what>.py`` in the checkout are
thin scripts calling the same ``main``. Every benchmark measures its baseline in the same process,
prints its figure and the ratio, and writes one record in the format of :mod:`vitdata.bench.record` (its one
writer and reader, with the environment and the commit).

May import every layer below it: ``vitdata.errors``, ``vitdata.io``, ``vitdata.optional``, ``vitdata.data``,
``vitdata.curriculum``, ``vitdata.oracle``, ``vitdata.kernels``, ``vitdata.pipelines``, ``vitdata.loader``,
``vitdata.train``. Nothing in the package imports a benchmark; a benchmark prints only what it measured.
"""
from __future__ import annotations

import importlib
import sys

# name -> (module, the question it answers)
BENCHMARKS = {
    "loader": ("vitdata.bench.loader", "images/s of vitdata vs plain DALI, the torch DataLoader, timm and a "
                                       "synthetic ceiling, same data and run; row 1's per-stage split"),
    "kernels": ("vitdata.bench.kernels", "GB/s of the low-pass crop and PatchErasing vs torch.fft and timm's "
                                         "RandomErasing; percent of the GPU's peak bandwidth"),
    "step": ("vitdata.bench.step", "data-wait fraction of a timm ViT training step fed by vitdata vs a "
                                   "synthetic batch"),
    "loader-backends": ("vitdata.bench.loader_backends", "DALI backend vs torch backend images/s, full "
                                                         "augmentation"),
    "decode": ("vitdata.bench.decode", "CPU ms per image of each route of decoding the crop window (DALI ROI, "
                                       "reduced in the source, Pillow full, Pillow reduced) at each size"),
    "png-check": ("vitdata.bench.png_check", "CPU ms per PNG that the PNG data check adds (epoch 0, later epochs) "
                                             "vs DALI's and Pillow's decode of the same file"),
    "index": ("vitdata.bench.index", "sample index build time and random reads/s"),
    "sampler": ("vitdata.bench.sampler", "time to build one epoch's order for 1.28 M samples"),
    "oracle": ("vitdata.bench.oracle", "oracle report() overhead per step; next-epoch plan + order"),
    "quarantine": ("vitdata.bench.quarantine", "step cost of the quarantine with no failure (<= 1 %), ms per step "
                                               "that fails in the decoder, epochs at 0.5 % / 2 % bad files"),
    "time-to-accuracy": ("vitdata.bench.time_to_accuracy", "each recipe's time to the baseline's final top-1, "
                                                           "same model, optimiser, epochs and data"),
}
ALIASES = {"t2a": "time-to-accuracy"}


def usage(prog: str) -> str:
    width = max(map(len, BENCHMARKS))
    lines = [f"usage: {prog} WHAT [options]  ({prog} WHAT --help for the options of each)", "", "benchmarks:"]
    lines += [f"  {name:<{width}}  {question}" for name, (_, question) in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "vitdata bench") -> int:
    """Dispatch ``argv[0]`` to its benchmark module's ``main(argv[1:])``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog))
        return 0
    name, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if name not in BENCHMARKS:
        print(f"{prog}: unknown benchmark {name!r}\n\n{usage(prog)}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[name][0])
    return int(module.main(rest, prog=f"{prog} {name}") or 0)
