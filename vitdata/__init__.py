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
            # The spec carries the full name, so submodules (vitdata.kernels.lowpass) resolve under it.
            return _util.spec_from_file_location(name, init, submodule_search_locations=[where])

    # First in line: an editable install of another checkout maps these two names to its own directories
    # (setuptools' finder), and a checkout's vitdata must not import another checkout's kernels.
    if not any(getattr(f, "__name__", "") == "_CheckoutFinder" for f in _sys.meta_path):
        _sys.meta_path.insert(0, _CheckoutFinder)

from vitdata.errors import ConfigError, DataError, StateError, VitdataError  # noqa: E402

_LOADER = ("create_loader", "Loader", "Batch")
_CONFIG = ("LoaderConfig", "AugmentConfig", "OutputConfig", "ScheduleConfig", "EvalConfig", "DistributedConfig")
_INDEX = ("SampleIndex", "SampleReader", "open_index", "build_index")

__all__ = ["__version__", "ConfigError", "DataError", "StateError", "VitdataError", *_LOADER, *_CONFIG,
           "DifficultyOracle", *_INDEX]


def __getattr__(name):
    # The loader, the configuration and the oracle pull in torch (and the loader DALI when it is used):
    # import them only when asked for.
    if name in _LOADER:
        from vitdata import loader
        return getattr(loader, name)
    if name in _CONFIG:
        from vitdata import config
        return getattr(config, name)
    if name == "DifficultyOracle":
        from vitdata.oracle import DifficultyOracle
        return DifficultyOracle
    if name in _INDEX:
        from vitdata import index
        return getattr(index, name)
    raise AttributeError(f"module 'vitdata' has no attribute {name!r}")
