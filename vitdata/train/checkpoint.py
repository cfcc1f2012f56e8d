"""Training checkpoints without pickle: tensors in safetensors, structure in JSON, a manifest written last.

A checkpoint is a directory holding, for step S::

    tensors-S.safetensors   every tensor and NumPy array of the state, flat, keyed by its path
    state-S.json            the nested state with each array replaced by a reference to its key
    manifest.json           {"format": 1, "step": S, "parts": {name: {"sha256": ..., "bytes": ...}},
                             "digest": sha256 of the canonical JSON of the rest} -- written last

Each part is written atomically under a new name before the manifest is swapped in, so a crash at
any point leaves the previous checkpoint readable; parts of older steps are removed afterwards.
``load`` checks the manifest against its own digest (and that it is byte-for-byte in canonical form),
then every part against the manifest's sha256 and size, and raises ``StateError`` naming the manifest or
the part on any mismatch or malformed content; a manifest of a newer format says so.

The state is any nest of dicts, lists, tuples, str, int, float, bool, None, torch tensors and NumPy
arrays (torch state dicts, optimizer state with int keys, the loader's and the oracle's plain data).
NumPy arrays come back as NumPy arrays, tensors as CPU tensors.

A training run's checkpoint (``vitdata train``): :func:`save_run` / :func:`load_run` / :func:`restore_run`
around a :class:`TrainState` (model, optimiser, loss scaler, EMA), the loader's state per rank, the
oracle's table once, and every rank's RNG streams (:func:`rng_state`).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vitdata.errors import ConfigError, OutputError, StateError
from vitdata.io import atomic_write

FORMAT = 1
MANIFEST = "manifest.json"
READ_TRIES = 5      # reads of a checkpoint that another process replaces meanwhile (see ``load``)


def _flatten(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise StateError(f"cannot save object array at {path}")
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj).copy()) if obj.dtype != np.uint16 \
            else torch.from_numpy(obj.astype(np.int32))
        return {"__ndarray__": path, "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return {k: _flatten(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, _flatten(v, f"{path}.{i}", tensors)] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise StateError(f"cannot save a {type(obj).__name__} at {path} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"], copy=False)
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def _digest(manifest: dict) -> str:
    """sha256 of the canonical JSON of the manifest without its ``digest`` field."""
    rest = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _dump_manifest(manifest: dict) -> bytes:
    # The exact bytes on disk; ``load`` requires them, so a flip in whitespace is refused too.
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def save(directory: str, state: dict, step: int) -> str:
    """Write ``state`` as the checkpoint of ``step`` in ``directory``; returns the manifest path.

    A write that fails (a full disk, a read-only folder) raises OutputError naming the file and the cause;
    the parts of this step written so far are removed and the previous checkpoint stays whole (its manifest
    and parts are untouched until the new manifest is in place)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "s", tensors)
    path = os.path.join(directory, MANIFEST)
    previous = _manifest_parts(path)
    # A second save of one step gets new part names: the previous checkpoint's parts are never overwritten.
    tname, sname = next(n for n in (_part_names(step, k) for k in range(len(previous) + 1)) if not set(n) & previous)
    parts = {tname: st_save(tensors), sname: json.dumps({"format": FORMAT, "state": tree}).encode()}
    manifest = {"format": FORMAT, "step": int(step),
                "parts": {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in parts.items()}}
    manifest["digest"] = _digest(manifest)
    try:
        os.makedirs(directory, exist_ok=True)
        for name, data in parts.items():
            atomic_write(os.path.join(directory, name), data)
        atomic_write(path, _dump_manifest(manifest))
    except OSError as e:
        for name in parts:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
        code = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "?"
        kept = "the previous checkpoint there is intact" if previous else "there was no previous checkpoint"
        raise OutputError(f"could not save the checkpoint of step {step} in {directory}: "
                          f"{e.strerror or e} ({code}; {kept})", errno=e.errno) from e
    for name in os.listdir(directory):  # parts of older checkpoints
        if name not in parts and name != MANIFEST and (name.startswith("tensors-") or name.startswith("state-")):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
    return path


def _part_names(step: int, k: int) -> tuple[str, str]:
    """The part names of the ``k``-th save of ``step`` (k = 0: ``tensors-S.safetensors``, ``state-S.json``)."""
    tail = f"{step}" if k == 0 else f"{step}.{k}"
    return f"tensors-{tail}.safetensors", f"state-{tail}.json"


def _manifest_parts(path: str) -> set[str]:
    """The part names the manifest at ``path`` lists (empty when there is none or it is unreadable)."""
    try:
        with open(path, "rb") as f:
            return set(json.loads(f.read()).get("parts", {}))
    except (OSError, ValueError, AttributeError):
        return set()


def write_file(path: str, data: bytes) -> None:
    """Write one file of a run (config.json, result.json) atomically; OutputError naming it when it cannot be
    written (a full disk, a read-only folder)."""
    try:
        atomic_write(path, data)
    except OSError as e:
        code = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "?"
        raise OutputError(f"could not write {path}: {e.strerror or e} ({code})", errno=e.errno) from e


def exists(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, MANIFEST))


def load(directory: str) -> dict:
    """Read the checkpoint in ``directory``; ``StateError`` if it is missing, corrupt or of another format.

    A checkpoint replaced while it is read (a run saving its next step: the new manifest goes in, then the
    old parts go) is read again from the new manifest, up to :data:`READ_TRIES` times."""
    mpath = os.path.join(directory, MANIFEST)
    for attempt in range(READ_TRIES):
        before = _raw(mpath)
        try:
            return _load_once(directory)
        except StateError:
            if attempt + 1 == READ_TRIES or before is None or _raw(mpath) == before:
                raise


def _raw(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _load_once(directory: str) -> dict:
    mpath = os.path.join(directory, MANIFEST)
    try:
        with open(mpath, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise StateError(f"no readable checkpoint manifest at {mpath}: {e}") from None
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise StateError(f"checkpoint manifest {mpath} is not valid JSON (truncated or modified): {e}") from None
    if not isinstance(manifest, dict):
        raise StateError(f"checkpoint manifest {mpath} is not a JSON object (truncated or modified)")
    fmt = manifest.get("format")
    if type(fmt) is int and fmt > FORMAT:
        raise StateError(f"checkpoint {mpath} was written by a newer vitdata (format {fmt}); "
                         f"this vitdata reads format {FORMAT}")
    if fmt != FORMAT or type(fmt) is not int:
        raise StateError(f"checkpoint manifest {mpath} has unknown format {fmt!r}, expected {FORMAT} "
                         f"(truncated or modified)")
    try:
        ok = manifest.get("digest") == _digest(manifest) and raw == _dump_manifest(manifest)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise StateError(f"checkpoint manifest {mpath} does not match its own digest (truncated or modified)")
    try:
        step, parts = manifest["step"], manifest["parts"]
        if type(step) is not int or not isinstance(parts, dict):
            raise ValueError(f"step {step!r} or parts {parts!r} of the wrong type")
        names = next((n for n in (_part_names(step, k) for k in range(3))
                      if sorted(parts) == sorted(n)), None)
        if names is None:
            raise ValueError(f"step {step!r} does not match parts {sorted(parts)!r}")
        metas = {n: (parts[n]["sha256"], int(parts[n]["bytes"])) for n in names}
    except (KeyError, TypeError, ValueError) as e:
        raise StateError(f"checkpoint manifest {mpath} is malformed: {type(e).__name__}: {e}") from None
    data = {}
    for name, (sha, size) in metas.items():
        p = os.path.join(directory, name)
        try:
            with open(p, "rb") as f:
                data[name] = f.read()
        except OSError as e:
            raise StateError(f"checkpoint part {p} is missing: {e}") from None
        if len(data[name]) != size or hashlib.sha256(data[name]).hexdigest() != sha:
            raise StateError(f"checkpoint part {p} does not match its size and sha256 in {mpath} (truncated or modified)")
    tname, sname = names
    try:
        tensors = st_load(data[tname])
    except Exception as e:  # safetensors raises its own error types
        raise StateError(f"checkpoint part {os.path.join(directory, tname)} is unreadable: "
                         f"{type(e).__name__}: {e}") from None
    try:
        tree = json.loads(data[sname])
        if not isinstance(tree, dict) or tree.get("format") != FORMAT:
            raise ValueError(f"format {tree.get('format') if isinstance(tree, dict) else None!r}, expected {FORMAT}")
        return _unflatten(tree["state"], tensors)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise StateError(f"checkpoint part {os.path.join(directory, sname)} is malformed: "
                         f"{type(e).__name__}: {e}") from None


# ----------------------------------------------------------------------------------------------------
# The random generators a training step draws from, as checkpoint state


def rng_state() -> dict:
    """Every generator the step draws from: torch (dropout, drop-path, PSS random, DRLoc pairs) and NumPy
    (timm Mixup)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": {"keys": np_state[1], "pos": int(np_state[2]),
                                                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured (the CUDA generator only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"], n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------------------------------
# A training run's checkpoint: what vitdata train saves and resumes from


@dataclass
class TrainState:
    """What a run's checkpoint holds besides the loader and the RNGs: the model, the optimiser, the fp16
    loss scaler and the EMA copy (a timm ModelEmaV3, or None). The keys of :meth:`state_dict` are the
    checkpoint's."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: Optional[torch.nn.Module] = None

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])


class Resumed(NamedTuple):
    """Where a resumed run continues: its step, epoch and seconds of training so far, and whether the
    evaluation of the epoch that ended at its checkpoint is still to be done."""
    step: int
    epoch: int
    elapsed: float
    eval_pending: bool


def save_run(directory: str, state: TrainState, loader, *, step: int, epoch: int, elapsed: float, config: dict,
             rank: int, world: int, scheduler: dict, eval_pending: bool = False) -> None:
    """Save a run at ``step`` (``epoch``: the epoch in progress, or the next one at an epoch end; ``elapsed``:
    seconds of training so far; ``eval_pending``: the evaluation of the epoch that just ended comes after
    this save, so a resume from it evaluates first), on every rank of the process group.

    Collectives first (the oracle's folding inside the loader's state, the RNG gather), on every rank; then
    rank 0 writes, and keeps a copy of the training index beside the checkpoint (:func:`vitdata.train.resume.
    keep_index`). The oracle's table is identical on every rank: it is stored once, not per rank. A write
    that fails on rank 0 (OutputError: a full disk) is raised on every rank."""
    import torch.distributed as dist

    from vitdata.train.resume import keep_index
    loader_state = loader.state_dict()
    oracle_state = loader_state.pop("oracle", None)
    rngs, loaders = [rng_state()], [loader_state]
    if world > 1:  # per-rank pieces: RNG streams and loader positions
        rngs, loaders = [None] * world, [None] * world
        dist.all_gather_object(rngs, rng_state())
        dist.all_gather_object(loaders, loader_state)
    failure = None
    if rank == 0:
        try:
            save(directory, {"step": step, "epoch": epoch, "time": elapsed, "config": config, **state.state_dict(),
                             "scheduler": scheduler, "loader": loaders, "oracle": oracle_state, "rng": rngs,
                             "world_size": world, "eval_pending": bool(eval_pending)}, step)
            keep_index(directory, loader.index)
        except OSError as e:   # the index copy; the checkpoint itself is saved
            print(f"vitdata train: could not keep a copy of the training index in {directory}: {e}", file=sys.stderr)
        except OutputError as e:
            failure = e
    if world > 1:   # rank 0's outcome, to every rank (this is also the save's barrier)
        box = [None if failure is None else str(failure)]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and failure is None:
            failure = OutputError(box[0])
    if failure is not None:
        raise failure


def find(path: str) -> str:
    """The checkpoint directory of ``path``: ``path/checkpoint`` (where a run writes), else ``path`` itself.
    When both hold one, ``path/checkpoint`` is taken and the other is named on stderr: a manifest in the run
    folder itself is a copied or older checkpoint, and the run has written its newer ones into checkpoint/."""
    inner = os.path.join(path, "checkpoint")
    if exists(inner):
        if exists(path):
            print(f"vitdata train: {path} holds two checkpoints; resuming {inner} (step {_step_of(inner)}), not "
                  f"{os.path.join(path, MANIFEST)} (step {_step_of(path)}): give that folder to --resume to "
                  f"use it instead", file=sys.stderr)
        return inner
    if exists(path):
        return path
    raise ConfigError(f"no checkpoint under {path} (looked for checkpoint/manifest.json and manifest.json)",
                      ("resume",))


def _step_of(directory: str):
    try:
        with open(os.path.join(directory, MANIFEST), "rb") as f:
            return json.loads(f.read()).get("step", "?")
    except (OSError, ValueError, AttributeError):
        return "?"


def load_run(path: str, world: int) -> tuple[str, dict]:
    """(the checkpoint directory under ``path`` (see :func:`find`), its checkpoint), checked: StateError when
    it is damaged, ConfigError when it was written by another number of processes than ``world``."""
    directory = find(path)
    saved = load(directory)
    if saved.get("world_size") != world:
        raise ConfigError(f"checkpoint {directory} was written by {saved.get('world_size')} processes, this run "
                          f"has {world}", ("resume",))
    return directory, saved


def restore_run(directory: str, saved: dict, state: TrainState, loader, rank: int, *, config: dict,
                fresh_loader: bool = False) -> Resumed:
    """Model, optimiser, scaler, EMA, the loader (its position inside the epoch, the oracle) and this rank's
    RNGs from ``saved`` (read from ``directory``); returns where to continue.

    Checked first, before anything is loaded: that the checkpoint holds this model (ConfigError naming the
    options that differ) and, unless ``fresh_loader``, this training data (StateError naming the files that
    changed, see :mod:`vitdata.train.resume`). ``fresh_loader``: the loader's and the oracle's state are not
    loaded; a checkpoint taken inside an epoch continues at the next epoch's start."""
    from vitdata.train.resume import check_model, check_same_data
    check_model(saved, state.model, config, directory)
    mine = saved["loader"][rank]
    if not fresh_loader:
        check_same_data(directory, (mine.get("fingerprint") or {}).get("index"), loader.index)
    state.load_state_dict(saved)
    epoch = int(saved["epoch"])
    if fresh_loader:   # saved inside its epoch (the loader's epoch is the run's, and steps of it are done)
        epoch += 1 if int(mine.get("epoch", -1)) == epoch and int(mine.get("position") or 0) > 0 else 0
    else:
        loader.load_state_dict(dict(mine, oracle=saved.get("oracle")))
    set_rng_state(saved["rng"][rank])
    return Resumed(saved["step"], epoch, saved["time"], bool(saved.get("eval_pending")))
