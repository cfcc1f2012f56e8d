"""vitdata: the input pipeline for Vision Transformer training.

DALI graphs decode and augment (GPU, or CPU where there is none), Triton kernels apply the Fourier
low-frequency crop and PatchErasing, and a difficulty oracle fed by the trainer's per-sample losses
re-weights what the sampler reads next.

The package's folders are its subsystems, each importing only those above it in this list:

- ``errors``, ``io``, ``optional``: plumbing (error types and reason codes, atomic files and JSON state,
  optional dependencies);
- ``data/``: the sample index, reading and checking samples, the epoch order per rank;
- ``decode/``: encoded bytes -> pixels: the colour policy, the crop window, JPEG decode at reduced scale;
- ``curriculum/``: (epoch, step) -> the knobs of a batch;
- ``oracle/``: per-sample difficulty -> the next epoch's plan;
- ``kernels/`` and ``pipelines/`` (top-level folders of the repository, installed here): Triton ops and
  the DALI graphs;
- ``loader/``: ``create_loader`` and the ``Loader``, its state and its two backends;
- ``train/``: the ``vitdata train`` loop on the public loader API;
- ``bench/``: one benchmark per question, one record format;
- ``cli``: the ``vitdata`` command.

``tests/test_structure.py`` holds the package to that order (no import cycle, lazy imports included).
"""
from vitdata.errors import ConfigError, DataError, StateError, VitdataError
from vitdata.version import __version__

_LOADER = ("create_loader", "Loader", "Batch", "LoaderConfig", "AugmentConfig", "OutputConfig", "ScheduleConfig",
           "EvalConfig", "DistributedConfig", "loaders_from_args", "timm_factories")
_DATA = ("SampleIndex", "SampleReader", "open_index", "build_index")

__all__ = ["__version__", "ConfigError", "DataError", "StateError", "VitdataError", *_LOADER, "DifficultyOracle",
           *_DATA]


def __getattr__(name):
    # The loader, the configuration and the oracle pull in torch (and the loader DALI when it is used):
    # import them only when asked for.
    if name in _LOADER:
        from vitdata import loader
        return getattr(loader, name)
    if name == "DifficultyOracle":
        from vitdata.oracle import DifficultyOracle
        return DifficultyOracle
    if name in _DATA:
        from vitdata import data
        return getattr(data, name)
    raise AttributeError(f"module 'vitdata' has no attribute {name!r}")
