"""A fixed-seed train/validation split of WebDataset shards, written once into the vitdata cache.

The time-to-accuracy benchmark needs a validation split where a dataset ships only a training one (CIFAR-10
here): the index cannot select ids, so the split is written as shards (``$VITDATA_CACHE/splits/``, about the
size of the source) and reused by every later run with the same source, size and seed.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np


def split_dir(source: str, val_size: int, seed: int, train_size: int = 0) -> str:
    from vitdata.io import cache_dir
    tag = hashlib.sha256(f"{os.path.abspath(source)}|{val_size}|{seed}|{train_size}".encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), "splits", tag)


def split_shards(source: str, val_size: int = 5000, seed: int = 0, train_size: int = 0,
                 per_shard: int = 10000) -> tuple[str, str]:
    """(train dir, val dir): ``source``'s samples, permuted by ``seed``, the last ``val_size`` for validation
    and the rest for training (each split in the source's order; ``train_size`` > 0 keeps only the first
    that many training samples), written as WebDataset shards (the encoded bytes as they are, ``KEY.jpg``
    + ``KEY.cls``) and classes.json under :func:`split_dir`. Reused when present (a ``DONE`` file marks a
    complete split)."""
    import tarfile
    import io
    import shutil

    from vitdata.data.reader import SampleReader
    from vitdata.data.index import open_index
    out = split_dir(source, val_size, seed, train_size)
    if os.path.exists(os.path.join(out, "DONE")):
        return os.path.join(out, "train"), os.path.join(out, "val")
    idx = open_index(source)
    n = len(idx)
    if not 0 < val_size < n:
        raise SystemExit(f"--val-size {val_size} must lie between 1 and {n - 1} (the samples in {source})")
    order = np.random.default_rng(seed).permutation(n)
    parts = {"train": np.sort(order[:n - val_size]), "val": np.sort(order[n - val_size:])}
    if train_size:
        parts["train"] = parts["train"][:train_size]
    tmp = out + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    reader = SampleReader(idx)
    try:
        for name, ids in parts.items():
            os.makedirs(os.path.join(tmp, name))
            with open(os.path.join(tmp, name, "classes.json"), "w") as f:
                json.dump(list(idx.classes), f)
            for s in range(0, len(ids), per_shard):
                with tarfile.open(os.path.join(tmp, name, f"{name}-{s // per_shard:06d}.tar"), "w") as tar:
                    for i in ids[s:s + per_shard]:
                        key = idx.key(int(i))
                        ext = os.path.splitext(idx.describe(int(i)).split(" (")[-1].rstrip(")"))[1] or ".jpg"
                        for member, payload in ((key + ext, reader.read(int(i))),
                                                (key + ".cls", str(int(idx.label[i])).encode())):
                            info = tarfile.TarInfo(member)
                            info.size = len(payload)
                            tar.addfile(info, io.BytesIO(payload))
        with open(os.path.join(tmp, "DONE"), "w") as f:
            json.dump({"source": os.path.abspath(source), "val_size": val_size, "seed": seed, "train_size": train_size,
                       "train": int(len(parts["train"])), "val": int(len(parts["val"]))}, f)
        reader.close()
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(out, "train"), os.path.join(out, "val")
