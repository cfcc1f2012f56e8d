"""DALI graph builders (train, eval), device choice and the external-source callable.

Installed as ``vitdata.pipelines``. ``vitdata.loader`` is the only intended user; import the pieces
from here to build a custom graph around vitdata's sampler and source.
"""
if __name__ != "vitdata.pipelines":
    # One name for one set of files: loaded twice, every module and its state would exist twice.
    raise ImportError(f"import this package as vitdata.pipelines, not as {__name__!r}")

from .source import (NUM_MAG_BINS, OUTPUTS, SUPPORTED_FORMATS, EpochSource, check_sample, code_reason, resolve_sample,
                     control_path, magnitude_to_bin, reason_code, write_control)

__all__ = ["NUM_MAG_BINS", "OUTPUTS", "SUPPORTED_FORMATS", "EpochSource", "check_sample", "code_reason",
           "control_path", "magnitude_to_bin", "reason_code", "write_control", "resolve_sample", "GraphSpec", "build_pipeline",
           "choose_device", "INTERPOLATIONS"]


def __getattr__(name):
    # The graph builders import DALI; the source and the checks do not (the torch backend uses them).
    if name in ("GraphSpec", "build_pipeline", "choose_device", "INTERPOLATIONS", "train_graph", "eval_graph"):
        from . import graphs
        return getattr(graphs, name)
    raise AttributeError(f"module 'vitdata.pipelines' has no attribute {name!r}")
