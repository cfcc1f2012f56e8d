"""DALI graph builders (train, eval), device choice and the external-source callable.

Installed as ``vitdata.pipelines`` (``setup.py``'s ``package_dir`` maps this top-level folder). The DALI
backend of ``vitdata.loader`` is the only intended user; import the pieces from here to build a custom
graph around vitdata's sampler and source.

May import: ``vitdata.errors``, ``vitdata.io``, ``vitdata.data`` (the sample checks the source applies),
``vitdata.decode`` (the crop window the source draws, the reduced JPEG decode on a CPU-only host),
``vitdata.curriculum`` (RandAugment's magnitude bins). Holds no training logic, and no non-DALI backend
imports it.
"""
if __name__ != "vitdata.pipelines":
    # One name for one set of files: loaded twice, every module and its state would exist twice.
    raise ImportError(f"import this package as vitdata.pipelines, not as {__name__!r}")

from .source import OUTPUTS, EpochSource, control_path, write_control

__all__ = ["OUTPUTS", "EpochSource", "control_path", "write_control", "GraphSpec", "build_pipeline"]


def __getattr__(name):
    # The graph builders import DALI; the source does not.
    if name in ("GraphSpec", "build_pipeline", "train_graph", "eval_graph"):
        from . import graphs
        return getattr(graphs, name)
    raise AttributeError(f"module 'vitdata.pipelines' has no attribute {name!r}")
