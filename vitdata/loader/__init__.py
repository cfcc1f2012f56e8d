"""The loader: ``create_loader(LoaderConfig(...))`` -> a :class:`~.loader.Loader` of :class:`~.loader.Batch` es.

Owns the configuration and its checks (:mod:`.config`, with ``from_timm_model`` and ``from_timm_args`` in
:mod:`.timm_args`), the loader itself (:mod:`.loader`: iteration, ``set_epoch``, ``report``, ``loss``,
resume), the epoch it runs (:mod:`.epoch`: where it stands and what the epoch's iteration carries), the
assembly of each step's batch (:mod:`.batch`: skips and "raise" errors, low-pass crop, PatchErasing, the
uint8 normalisation), its saved state and the checks on loading it (:mod:`.state`), the decoder
quarantine (:mod:`.quarantine`), per-sample losses (:mod:`.loss`), the DataLoader-shaped face that
trainers read (:mod:`.compat`, used from outside only: the loader's own code talks to its sampler
directly), vitdata in a timm-family trainer's own script (:mod:`.dropin`, :mod:`.resume`: loaders from its
args, its checkpoints), what the host gives (:mod:`.host`: devices, threads, workers) and the backends behind one
interface (:mod:`.backends`: the DALI graphs of ``vitdata.pipelines``, or a torch DataLoader).

May import: ``vitdata.errors``, ``vitdata.io``, ``vitdata.optional``, ``vitdata.data``,
``vitdata.decode``, ``vitdata.curriculum``, ``vitdata.oracle``, ``vitdata.kernels``, ``vitdata.pipelines`` (in the DALI
backend only). Only the backend factory knows which backend runs.
"""
from vitdata.loader.config import (AugmentConfig, DistributedConfig, EvalConfig, LoaderConfig, OutputConfig, ScheduleConfig)
from vitdata.loader.loader import Batch, Loader, create_loader
from vitdata.loader.dropin import loaders_from_args, timm_factories

__all__ = ["LoaderConfig", "AugmentConfig", "OutputConfig", "EvalConfig", "ScheduleConfig", "DistributedConfig",
           "Batch", "Loader", "create_loader", "loaders_from_args", "timm_factories"]
