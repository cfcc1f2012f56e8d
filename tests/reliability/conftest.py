"""Corpora for the reliability suite: the 28 bad-input kinds mixed into self-identifying datasets."""
import os

import pytest

from vitdata.datasets import badinputs


@pytest.fixture(autouse=True)
def _index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "index-cache"))


def mixed(tmp_path_factory, layout: str, num_good: int, kinds=None) -> badinputs.Mixed:
    root = tmp_path_factory.mktemp(f"mixed-{layout}")
    if layout == "imagefolder":
        return badinputs.write_imagefolder_mixed(str(root / "train"), num_good, kinds)
    return badinputs.write_shards_mixed(str(root / "shards"), num_good, kinds)


def bad_ids(index, m: badinputs.Mixed) -> dict[int, int]:
    """kind -> index position of its sample."""
    out = {}
    for i in range(len(index)):
        where = index.path(i) if index.kind == "imagefolder" else index.key(i)
        for k, key in m.bad.items():
            if where == key:
                out[k] = i
    return out
