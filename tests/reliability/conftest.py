"""Corpora for the reliability suite: the 28 bad-input kinds mixed into self-identifying datasets."""

import pytest

from vitdata import DataError, LoaderConfig, create_loader
from vitdata.loader.config import AugmentConfig

import badinputs

# The whole image, unaugmented: pixels identify the sample.
FULL_VIEW = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)


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


def skip_corpus(tmp_path_factory, name: str) -> tuple[LoaderConfig, int, list[int]]:
    """62 good 16 px images and 2 bad ones (kinds 1 and 3), read with ``on_error="skip"``: the training
    config, the dataset size and the index positions of the bad files (the C4 and skip-policy tests)."""
    root = tmp_path_factory.mktemp(name)
    m = badinputs.write_imagefolder_mixed(str(root / "train"), 62, kinds=[1, 3], size=16)
    cfg = LoaderConfig(data=m.root, batch_size=8, image_size=16, backend="torch", num_workers=0,
                       augment=FULL_VIEW, on_error="skip", seed=5)
    probe = create_loader(cfg)
    try:
        return cfg, len(probe.index), sorted(bad_ids(probe.index, m).values())
    finally:
        probe.close()


def drain(loader, tries: int = 20) -> tuple[list, list]:
    """Iterate ``loader`` on after each DataError until an epoch ends (at most ``tries`` times): (the errors,
    the ids of every batch delivered)."""
    errors, seen = [], []
    for _ in range(tries):
        try:
            for b in loader:
                seen += b.ids.tolist()
            break
        except DataError as e:
            errors.append(e)
    return errors, seen
