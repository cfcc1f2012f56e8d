"""The ``vitdata`` command: ``index``, ``train``, ``bench``, ``preview``.

Each subcommand's arguments belong to the module that implements it (``main(argv)`` there), so
``vitdata SUB --help`` is that module's own help and this file holds no logic of its own.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "index": ("vitdata.index", "scan an ImageFolder tree or WebDataset tar shards into a sample index"),
    "train": ("vitdata.train", "train a timm ViT with the curriculum switches (synthetic data by default)"),
    "bench": ("vitdata.bench", "measure data throughput: loader, kernels, training step"),
    "preview": ("vitdata.preview", "write a grid of images as the model would see them at a given epoch"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="vitdata",
        description="vitdata: a GPU input pipeline for ViT training with a data curriculum.",
        epilog="Run 'vitdata SUBCOMMAND --help' for the options of each subcommand.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        from vitdata import __version__
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        parser.error(f"unknown subcommand {name!r} (choose from {', '.join(SUBCOMMANDS)})")
    module_name = SUBCOMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        parser.error(f"subcommand {name!r} is not available in this build")
    return int(module.main(rest, prog=f"vitdata {name}") or 0)


if __name__ == "__main__":
    raise SystemExit(main())
