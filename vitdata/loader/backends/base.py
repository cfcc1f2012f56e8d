"""The interface between the loader and its backends, and the per-epoch control they share.

The loader owns epochs, resume and skips; a backend only turns one epoch's *control* (the sampler's id
order and the schedule's per-step knobs) into raw batches, from a given step on. Both backends have the
same five methods:

===================================  ==============================================================
``start(control, epoch, position)``  begin ``epoch`` at step ``position`` (a state given to
                                     ``restore`` first is resumed here when it belongs to that point)
``next()``                           the next step's :class:`RawBatch`; StopIteration past the end
``state()``                          plain, JSON-able data that ``restore`` takes back
``restore(state)``                   drop what runs now; the next ``start`` resumes from ``state``
                                     (None: nothing to resume, that start begins afresh)
``close()``                          stop workers, remove temporary files (idempotent)
===================================  ==============================================================

``device_id`` is the CUDA device the backend's graph runs on (None: CPU ops, or no graph at all);
``spec`` the :class:`vitdata.pipelines.graphs.GraphSpec` of its DALI graph (None without one).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class BackendContext:
    """What a backend is built from: the checked config and what the loader resolved from it."""
    cfg: Any                 # vitdata.loader.config.LoaderConfig (defaults resolved)
    split: str               # "train" | "eval"
    rank: int
    batch_size: int          # per rank
    device: torch.device     # where images, labels and ids are delivered
    index: Any               # vitdata.data.index.SampleIndex
    reader: Any              # vitdata.data.reader.SampleReader
    quarantine: Any = None   # vitdata.loader.quarantine.Quarantine: decoder-refused ids (the loader's, in its state)
    uint8_images: bool = False   # train: the schedule has low-pass crop steps, so a backend that can may deliver
                                 # uint8 images, not normalised (the loader normalises them in the crop's pass)
    levels: str | None = None    # train: the folder of the index's levels store (vitdata.decode.levels), or None

    @property
    def train(self) -> bool:
        return self.split == "train"


@dataclass
class RawBatch:
    """One step as a backend delivers it. ``images`` (B, 3, H, W) float on the output device, normalised,
    or uint8 on the 0..255 scale when the context asked for ``uint8_images`` and the backend honours it
    (``layout`` "HWC": a (B, H, W, 3) buffer); ``labels``, ``ids`` (delivered id, -1 for eval padding),
    ``orig`` (id the sampler asked for) and ``status`` (0, or the skip reason's code) are (B,) NumPy."""
    images: torch.Tensor
    labels: np.ndarray
    ids: np.ndarray
    orig: np.ndarray
    status: np.ndarray
    layout: str = "CHW"


class Backend(abc.ABC):
    """See the module docstring."""

    name: str = ""
    device_id: int | None = None
    spec: Any = None

    @abc.abstractmethod
    def start(self, control: dict[str, np.ndarray], epoch: int, position: int) -> None: ...

    @abc.abstractmethod
    def next(self) -> RawBatch: ...

    @abc.abstractmethod
    def state(self) -> dict: ...

    @abc.abstractmethod
    def restore(self, state: dict | None) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


def make_control(epoch: int, ids: np.ndarray, knobs: list, extra_mag: np.ndarray) -> dict[str, np.ndarray]:
    """One epoch's control: ``ids`` int64 (steps*batch,) in consumption order (eval padding -1), the
    per-step size, RandAugment magnitude and op count, and the oracle's per-sample magnitude addition."""
    return {"epoch": np.array(epoch, np.int64), "ids": np.ascontiguousarray(ids.reshape(-1), np.int64),
            "step_size": np.array([k.image_size for k in knobs], np.int32),
            "step_magnitude": np.array([k.randaug_magnitude for k in knobs], np.float32),
            "step_num_ops": np.array([k.randaug_num_ops for k in knobs], np.int32),
            "extra_magnitude": np.ascontiguousarray(extra_mag.reshape(-1), np.float32)}


def control_tail(control: dict[str, np.ndarray], step: int, batch_size: int) -> dict[str, np.ndarray]:
    """The control of the steps from ``step`` on (a pipeline whose epoch begins mid-way); ``first_position``
    is the loader-epoch position of its first sample (per-position draws, e.g. crop windows, key on it)."""
    if step == 0:
        return control
    tail = dict(control, first_position=np.array(step * batch_size, np.int64))
    for k in ("ids", "extra_magnitude"):
        tail[k] = control[k][step * batch_size:]
    for k in ("step_size", "step_magnitude", "step_num_ops"):
        tail[k] = control[k][step:]
    return tail


def start_method(cfg) -> str:
    """Worker start method: ``cfg.start_method``, or for "auto" spawn where CUDA exists, else fork."""
    if cfg.start_method != "auto":
        return cfg.start_method
    # Never fork after CUDA is initialised (the child inherits a broken context); spawn also where CUDA
    # exists at all, since the trainer may initialise it before the next pipeline is built.
    return "spawn" if torch.cuda.is_available() or torch.cuda.is_initialized() else "fork"
