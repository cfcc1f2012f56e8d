"""The loader's side of levels (:mod:`vitdata.decode.levels`): building an index's store from its samples, and
finding it for ``LoaderConfig.decode_levels``.

A store is built once per dataset, like FFCV's dataset file, and only from samples the loader would
deliver: a file the reader or its checks refuse (missing, cut short, a fatal JPEG header) gets no level,
so it fails exactly as without levels. ``vitdata levels --data ROOT --out DIR`` builds it; the loader reads
``<DIR>/levels-<fingerprint>`` and refuses a folder that holds no store of its index, naming that command.
"""
from __future__ import annotations

import os

from vitdata.errors import ConfigError, DataError


def build_store(index, reader, root: str, workers: int = 1, progress=None) -> str:
    """Build (or find) the levels store of ``index`` under ``root`` from ``reader``; returns its folder."""
    from vitdata.data.checks import check_bytes
    from vitdata.decode.levels import build_levels
    from vitdata.loader.config import LoaderConfig

    def samples():
        for i in range(len(index)):
            try:
                data = check_bytes(reader.read(i), LoaderConfig.max_pixels)[0]   # the loader's default budget
            except DataError:
                data = None
            yield data

    return build_levels(samples(), len(index), root, index.fingerprint, workers, progress)


def open_store(cfg, index) -> str | None:
    """The folder of ``index``'s store under ``cfg.decode_levels`` (None when unset), checked to open."""
    if cfg.decode_levels is None:
        return None
    from vitdata.decode.levels import Levels, store_dir

    path = store_dir(cfg.decode_levels, index.fingerprint)
    if not os.path.exists(os.path.join(path, "meta.json")):
        raise ConfigError(f"decode_levels={cfg.decode_levels!r} holds no levels store of this dataset "
                          f"({os.path.basename(path)}); build it with: vitdata levels --data {cfg.data} "
                          f"--out {cfg.decode_levels}", ("decode_levels",))
    try:
        Levels(path, index.fingerprint, len(index))
    except (OSError, ValueError) as e:
        raise ConfigError(f"decode_levels: {e}", ("decode_levels",)) from e
    return path


def main(argv=None, prog: str = "vitdata levels") -> int:
    """``vitdata levels --data ROOT --out DIR``: build the store, print where it is and what it holds."""
    import argparse
    import json

    from vitdata.data.index import open_index
    from vitdata.data.reader import SampleReader

    p = argparse.ArgumentParser(prog=prog, description="Build the levels store of a dataset (each plain JPEG "
                                "decoded once at 1/2, 1/4 and 1/8 and stored as a JPEG of quality 95) for "
                                "LoaderConfig.decode_levels / vitdata train --decode-levels.")
    p.add_argument("--data", required=True, help="ImageFolder root or WebDataset shards (as LoaderConfig.data)")
    p.add_argument("--out", required=True, help="folder of levels stores (the store is levels-<fingerprint> in it)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads that decode and encode (default: all cores)")
    a = p.parse_args(argv)
    try:
        index = open_index(a.data, bad_labels="mark")
    except DataError as e:
        raise ConfigError(f"cannot open data source {a.data!r}: {e}", ("data",)) from e
    try:
        from tqdm import tqdm
    except ImportError:         # the "report" extra: no bar without it
        path = build_store(index, SampleReader(index), a.out, max(1, a.workers))
    else:
        with tqdm(total=len(index), unit="img", desc="levels", disable=None) as bar:
            path = build_store(index, SampleReader(index), a.out, max(1, a.workers), lambda k: bar.update(k - bar.n))
    with open(os.path.join(path, "meta.json"), encoding="utf-8") as fh:
        print(json.dumps({"store": path, **json.load(fh)}))
    return 0
