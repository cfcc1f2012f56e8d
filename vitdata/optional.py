"""Optional dependencies: what vitdata does when one is not installed.

==============  ======================================  ===============================================
module          used for                                without it
==============  ======================================  ===============================================
``tqdm``        ``vitdata train``'s progress bar        a plain log line every few seconds (stderr)
``matplotlib``  the report's PNG plots, ``preview``,    report: plots skipped with one message, summary.md
                ``bench loader --plot``                 still written; preview: MissingDependency
``yaml``        ``vitdata train --config x.yaml``       ConfigError naming pyyaml (``.json`` configs
                (package ``pyyaml``)                    are read with the standard library)
==============  ======================================  ===============================================

All three are in the ``report`` extra (``pip install "vitdata[report]"``); ``make run`` and ``make test``
install it. An air-gapped host installs vitdata with ``pip install --no-deps --no-build-isolation -e .``
over what is already there and runs without them.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from vitdata.errors import VitdataError

# import name -> (pip package, what needs it)
PACKAGES = {"tqdm": "tqdm", "matplotlib": "matplotlib", "yaml": "pyyaml"}


class MissingDependency(VitdataError, ImportError):
    """An optional package that the requested feature needs is not installed; ``hint`` says how to get it."""

    def __init__(self, module: str, needed_for: str):
        self.module, self.package = module, PACKAGES.get(module, module)
        super().__init__(f"{needed_for} needs {self.package}, which is not installed")
        self.hint = install_hint(module)


def install_hint(module: str) -> str:
    """How to install the package that provides ``module``."""
    package = PACKAGES.get(module, module)
    return f'pip install {package}  (or all optional packages: pip install "vitdata[report]")'


def optional_import(module: str) -> ModuleType | None:
    """``module`` imported, or None when it (or one of its own imports) is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def require(module: str, needed_for: str) -> ModuleType:
    """``module`` imported, or :class:`MissingDependency` naming the package and ``needed_for``."""
    mod = optional_import(module)
    if mod is None:
        raise MissingDependency(module, needed_for)
    return mod
