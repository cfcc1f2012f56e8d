"""vitdata: the input pipeline for Vision Transformer training.

DALI graphs decode and augment (GPU, or CPU where there is none), Triton kernels apply the Fourier
low-frequency crop and PatchErasing, and a difficulty oracle fed by the trainer's per-sample losses
re-weights what the sampler reads next.
"""
__version__ = "0.1.0"

# ``pipelines/`` and ``kernels/`` live at the top of the repository. An installed vitdata has them as
# ``vitdata.pipelines`` and ``vitdata.kernels`` (setup.py's package_dir); in a checkout the symbolic links
# ``vitdata/pipelines`` and ``vitdata/kernels`` point at them, so a checkout on the path imports its own.

from vitdata.errors import ConfigError, DataError, StateError, VitdataError

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
