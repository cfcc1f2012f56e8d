"""vitdata: the input pipeline for Vision Transformer training.

DALI graphs decode and augment (GPU, or CPU where there is none), Triton kernels apply the Fourier
low-frequency crop and PatchErasing, and a difficulty oracle fed by the trainer's per-sample losses
re-weights what the sampler reads next.
"""
import os as _os

__version__ = "0.1.0"

# A source checkout run with the repository root on sys.path (``python -m vitdata`` or ``torchrun -m
# vitdata`` from the root) imports this directory directly, bypassing the installed mapping of
# ``pipelines/`` -> ``vitdata.pipelines`` and ``kernels/`` -> ``vitdata.kernels``. Add the mapped
# directories to the search path for exactly those two subpackages in that case.
_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "kernels")) and _os.path.isfile(_os.path.join(_root, "setup.py")):
    import importlib.util as _util
    import sys as _sys

    class _CheckoutFinder:
        _map = {f"{__name__}.pipelines": _os.path.join(_root, "pipelines"),
                f"{__name__}.kernels": _os.path.join(_root, "kernels")}

        @classmethod
        def find_spec(cls, name, path=None, target=None):
            where = cls._map.get(name)
            init = None if where is None else _os.path.join(where, "__init__.py")
            if init is None or not _os.path.isfile(init):
                return None
            # the spec must carry the full dotted name, or the import system cannot find the new module
            return _util.spec_from_file_location(name, init, submodule_search_locations=[where])

    # Ahead of every other finder: an editable install of another checkout maps the same two names to
    # its own directories, and this checkout's code must not run with that checkout's subpackages.
    if not any(getattr(f, "__name__", "") == "_CheckoutFinder" for f in _sys.meta_path):
        _sys.meta_path.insert(0, _CheckoutFinder)

from vitdata.errors import ConfigError, DataError, StateError, VitdataError  # noqa: E402

__all__ = ["__version__", "ConfigError", "DataError", "StateError", "VitdataError"]


def __getattr__(name):
    # The loader pulls in DALI and torch; import it only when asked for.
    if name in ("create_loader", "LoaderConfig", "Loader", "Batch"):
        from vitdata import loader
        return getattr(loader, name)
    if name in ("SampleIndex", "SampleReader", "open_index", "build_index"):
        from vitdata import index
        return getattr(index, name)
    raise AttributeError(f"module 'vitdata' has no attribute {name!r}")
