"""What a resume checks before it loads a checkpoint, and the copy of the training index it keeps for that
(docs/reliability.md J7-J9).

- **Another model.** The checkpoint's parameters are compared with the model's, names and shapes, before
  ``load_state_dict``; a mismatch is one ConfigError naming the checkpoint and the options that differ
  (model, depth, width, heads, patch, image size, classes...), not PyTorch's list of every tensor.
- **Other training data.** A loader position belongs to the file list it was saved with: the loader refuses
  a state of another index. The checkpoint folder keeps a copy of the index it was saved with
  (``index-<fingerprint>.npz``, a hard link to the cached index where the filesystem allows, else a copy,
  written once per index), so the refusal names the files that went, came or changed, and says how to go
  on: ``--fresh-loader`` keeps the model, optimiser, EMA, step count and random streams and starts the
  loader afresh at the next epoch's beginning (the oracle's table too: its rows are the old file list's).
"""
from __future__ import annotations

import contextlib
import json
import os

import numpy as np

from vitdata.data.index import SampleIndex
from vitdata.errors import ConfigError, StateError

# TrainConfig fields that shape the model's parameters, named when a checkpoint's parameters do not fit.
ARCH_FIELDS = ("model", "depth", "embed_dim", "num_heads", "patch_size", "image_size", "global_pool", "locality",
               "drloc", "pss")
INDEX_PREFIX = "index-"


def check_model(saved: dict, model, config: dict, where: str) -> None:
    """ConfigError when the parameters in ``saved["model"]`` do not fit ``model`` (a name missing on either
    side, or another shape), naming ``where`` and the differing options of ``saved["config"]``."""
    mine, theirs = model.state_dict(), saved.get("model") or {}
    missing = [k for k in mine if k not in theirs]
    extra = [k for k in theirs if k not in mine]
    shapes = [k for k in mine if k in theirs and tuple(mine[k].shape) != tuple(theirs[k].shape)]
    if not (missing or extra or shapes):
        return
    old = saved.get("config") or {}
    fields = [f for f in ARCH_FIELDS if f in old and old.get(f) != config.get(f)]
    said = [f"{f} {old.get(f)!r} (this run: {config.get(f)!r})" for f in fields]
    if "head.weight" in mine and "head.weight" in theirs and mine["head.weight"].shape[0] != theirs["head.weight"].shape[0]:
        said.append(f"{theirs['head.weight'].shape[0]} classes (this run's data: {mine['head.weight'].shape[0]})")
    if not said:
        first = (shapes or missing or extra)[0]
        said.append(f"{len(missing) + len(extra) + len(shapes)} parameters differ, e.g. {first} "
                    f"({tuple(theirs[first].shape) if first in theirs else 'absent'} in the checkpoint, "
                    f"{tuple(mine[first].shape) if first in mine else 'absent'} here)")
    raise ConfigError(f"checkpoint {where} holds another model: {'; '.join(said)}. Resume with the options it was "
                      f"saved with (its run's config.json), or start a new run", ("resume", *fields))


def keep_index(directory: str, index: SampleIndex) -> None:
    """Keep a copy of the training ``index`` in the checkpoint ``directory`` (once per index fingerprint),
    and remove copies of other indexes. A hard link to the cached file when it holds this index, else a copy."""
    name = INDEX_PREFIX + index.fingerprint[:16] + ".npz"
    path = os.path.join(directory, name)
    if os.path.exists(path):
        return
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    source = index.index_path
    if source and _header_fingerprint(source) == index.fingerprint:
        try:
            os.link(source, tmp)
        except OSError:   # another filesystem, or links not allowed
            import shutil
            shutil.copyfile(source, tmp)
    else:   # not cached (a read-only cache), or the cache now holds another index: write this one
        import dataclasses
        dataclasses.replace(index).save(tmp)   # a copy: the loader's index keeps its own index_path
    os.replace(tmp, path)
    for other in os.listdir(directory):
        if other.startswith(INDEX_PREFIX) and other.endswith(".npz") and other != name:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, other))


def check_same_data(directory: str, saved_fingerprint: str | None, index: SampleIndex) -> None:
    """StateError (with a hint naming ``--fresh-loader``) when the checkpoint in ``directory`` was saved
    with another training index than ``index``: which files went, came or changed, from the kept copy."""
    if saved_fingerprint is None or saved_fingerprint == index.fingerprint:
        return
    old = _kept_index(directory, saved_fingerprint)
    what = describe_change(old, index) if old is not None else \
        f"its index differs from this data's ({len(index)} samples now; the checkpoint keeps no copy of its own)"
    err = StateError(f"cannot resume {directory}: the training data changed since the checkpoint was saved: "
                     f"{what}. The loader's position belongs to the old file list")
    err.hint = ("resume with --fresh-loader to keep the model, optimiser, EMA and step count and start the loader "
                "afresh at the next epoch (the oracle's table restarts too), or restore the files")
    raise err


def describe_change(old: SampleIndex, new: SampleIndex) -> str:
    """Which sources (files, or tar shards) of ``old`` are gone from ``new``, new in it, or changed (other
    samples or byte lengths), and the sample counts: one line, at most 3 names of each."""
    before, after = _per_source(old), _per_source(new)
    gone = [p for p in before if p not in after]
    added = [p for p in after if p not in before]
    changed = [p for p in before if p in after and before[p] != after[p]]
    unit = "files" if old.kind == "imagefolder" else "shards"
    parts = [f"{len(names)} {unit} {verb} ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})"
             for names, verb in ((gone, "gone"), (added, "added"), (changed, "changed")) if names]
    if list(old.classes) != list(new.classes):
        parts.append(f"classes {len(old.classes)} then, {len(new.classes)} now")
    if not parts:
        parts.append(f"the same {unit} hold other samples, labels or keys")
    parts.append(f"{len(old)} samples then, {len(new)} now")
    return "; ".join(parts)


def _per_source(index: SampleIndex) -> dict[str, tuple[int, int]]:
    """source -> (samples, bytes) of ``index``."""
    n = len(index.sources)
    counts = np.bincount(index.file_id, minlength=n)
    sizes = np.bincount(index.file_id, weights=index.length.astype(np.float64), minlength=n)
    return {p: (int(c), int(b)) for p, c, b in zip(index.sources, counts.tolist(), sizes.tolist())}


def _kept_index(directory: str, fingerprint: str) -> SampleIndex | None:
    path = os.path.join(directory, INDEX_PREFIX + fingerprint[:16] + ".npz")
    try:
        idx = SampleIndex.load(path)
    except (StateError, OSError):
        return None
    return idx if idx.fingerprint == fingerprint else None


def _header_fingerprint(path: str) -> str | None:
    """The fingerprint an index file records in its header (without recomputing it), or None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(bytes(z["header"]).decode()).get("fingerprint")
    except Exception:   # any unreadable file: not the index we hold
        return None
