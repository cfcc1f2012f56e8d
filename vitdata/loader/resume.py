"""The loader state inside a trainer's own checkpoint: ``loader.resume(checkpoint, epoch)``.

timm's ``train.py`` and DeiT-style ``main.py`` pickle their ``args`` namespace into every checkpoint they write
(timm's ``CheckpointSaver``: ``last``, ``checkpoint-N``, ``model_best``, recovery files; DeiT: ``checkpoint.pth``,
``best_checkpoint.pth``). Setting ``args.vitdata_loader = loader.state_dict()`` just before the save puts the
loader's state in the same file as the weights it belongs to: every checkpoint carries its own epoch's
state, a copied or renamed checkpoint keeps it, and timm's pruning of old checkpoints prunes it too. The
state is JSON types only, so timm's ``torch.load(..., weights_only=True)`` reads it.

On resume, :func:`resume_from_checkpoint` loads it when it is the state of the epoch before the one the
trainer resumes at. A checkpoint without a loader state (written before the switch to vitdata) or with the
state of another epoch (a mid-epoch recovery file carries the previous epoch's) is not refused: the loader
starts the resumed epoch afresh, with a warning naming the file and what is lost: the epoch's order is a
pure function of (seed, epoch, rank, world, plan), so without an oracle the same samples come in the same
order; the augmentation draws start anew, and an oracle's table and plan are empty.
"""
from __future__ import annotations

import copy
import os
import warnings

from vitdata.errors import ConfigError, StateError, user_stacklevel
from vitdata.loader.state import read_state

__all__ = ["checkpoint_loader_state", "resume_from_checkpoint"]

KEY = "vitdata_loader"


def checkpoint_loader_state(checkpoint) -> dict | None:
    """The loader state in ``checkpoint`` (a path, or the dict ``torch.load`` gave):
    ``checkpoint["args"].vitdata_loader`` or a top-level ``checkpoint["vitdata_loader"]``; None when it holds none."""
    ck = _load(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    if not isinstance(ck, dict):
        return None
    args = ck.get("args")
    state = args.get(KEY) if isinstance(args, dict) else getattr(args, KEY, None)
    state = ck.get(KEY) if state is None else state
    return state if isinstance(state, dict) else None


def _load(path) -> dict:
    import argparse

    import torch

    if not os.path.isfile(path):
        raise StateError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:   # mmap: the weights are not read, only the small args are unpickled
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise StateError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def resume_from_checkpoint(loader, checkpoint, epoch: int | None) -> bool:
    """Resume ``loader`` at ``epoch`` (the epoch the trainer resumes at: timm's ``resume_epoch``, DeiT's
    ``args.start_epoch``) from the state saved in ``checkpoint``. True when the state was loaded; False when
    the loader starts ``epoch`` afresh (warned, see the module docstring). A state that fits the epoch but
    not this loader (another dataset, batch, seed or curriculum length) is refused by ``load_state_dict``
    with a StateError naming what differs."""
    name = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "the checkpoint"
    state = checkpoint_loader_state(checkpoint)
    if epoch is None:
        warnings.warn(f"vitdata: {name} names no epoch to resume at; the loader state in it is not used",
                      UserWarning, stacklevel=user_stacklevel())
        return False
    epoch = int(epoch)
    if state is None:
        _fresh(loader, epoch, f"{name} holds no vitdata loader state (args.{KEY}, set just before the trainer "
                              f"saves)")
        return False
    saved, started, finished = _saved_point(loader, state)
    if not ((finished and saved == epoch - 1) or (not started and not finished and saved == epoch)):
        where = f"after epoch {saved}" if finished else f"in epoch {saved}"
        _fresh(loader, epoch, f"{name} holds the loader state {where}, not the end of epoch {epoch - 1} where the "
                              f"trainer resumes (a mid-epoch recovery checkpoint carries the last finished epoch's)")
        return False
    loader.load_state_dict(state)
    loader.set_epoch(epoch)
    return True


def _saved_point(loader, state: dict) -> tuple[int, bool, bool]:
    """(epoch, started, finished) of a loader state of either format. Format 2 says where it stands once:
    its epoch is finished when the position is that epoch's step count under the state's own plan."""
    state = read_state(state)
    epoch, position = int(state["epoch"]), int(state["position"])
    if state["format"] == 1:
        finished = bool(state.get("finished"))
        return epoch, bool(state.get("started")) or finished, finished
    sampler = copy.deepcopy(loader._sampler)
    try:
        sampler.load_state_dict(dict(state["sampler"], epoch=epoch, position=0))
    except ConfigError:   # not this loader's sampler: load_state_dict refuses it, naming what differs
        return epoch, position > 0, position > 0
    return epoch, position > 0, position > 0 and position == sampler.steps_per_epoch()


def _fresh(loader, epoch: int, why: str) -> None:
    warnings.warn(f"vitdata: {why}: the loader starts epoch {epoch} afresh (the same order of samples; "
                  f"the augmentation draws, and an oracle's table and plan, start anew)", UserWarning,
                  stacklevel=user_stacklevel())
    loader.set_epoch(epoch)
