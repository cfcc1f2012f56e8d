"""The ``vitdata`` command: ``index``, ``levels``, ``train``, ``bench``, ``preview``.

Each subcommand's arguments belong to the module that implements it (``main(argv)`` there), so
``vitdata SUB --help`` is that module's own help and this file holds no logic of its own.

Errors: a vitdata error (:class:`vitdata.errors.VitdataError` and its subclasses: a bad option, bad data,
a damaged checkpoint or index) is printed as one line, ``vitdata SUB: error: <Type>: <message>`` (and the
error's ``hint`` on a second line when it has one), to stderr, and the command exits with status 1.
``--debug`` (anywhere on the command line) or ``VITDATA_DEBUG=1`` shows the traceback instead. Any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = {
    "index": ("vitdata.data.index", "scan an ImageFolder tree or WebDataset tar shards into a sample index"),
    "levels": ("vitdata.loader.levels", "store each photo at 1/2, 1/4 and 1/8 size once, so small curriculum steps "
                                        "decode small files (LoaderConfig.decode_levels)"),
    "train": ("vitdata.train.loop", "train a timm ViT with the curriculum switches (synthetic data by default)"),
    "bench": ("vitdata.bench", "measure data throughput: loader, kernels, training step"),
    "preview": ("vitdata.train.preview", "write a grid of images as the model would see them at a given epoch"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("VITDATA_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = argparse.ArgumentParser(
        prog="vitdata",
        description="vitdata: a GPU input pipeline for ViT training with a data curriculum.",
        epilog="Run 'vitdata SUBCOMMAND --help' for the options of each subcommand.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a vitdata error (also: VITDATA_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        from vitdata.version import __version__
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
    from vitdata.errors import VitdataError
    try:
        return int(module.main(rest, prog=f"vitdata {name}") or 0)
    except VitdataError as e:
        if debug:
            raise
        print(error_line(f"vitdata {name}", e), file=sys.stderr)
        return 1


def error_line(prog: str, error: BaseException) -> str:
    """``error`` as the command prints it: one line, plus the error's ``hint`` (when it has one) on a second."""
    message = " ".join(str(error).split()) or "(no message)"
    text = f"{prog}: error: {type(error).__name__}: {message}"
    hint = getattr(error, "hint", None)  # optional: not every vitdata error carries one
    return f"{text}\n{prog}: hint: {hint}" if hint else text


if __name__ == "__main__":
    raise SystemExit(main())
