"""A JPEG that libjpeg decodes with a "Corrupt JPEG data" warning is delivered and counted under its own reason
(``corrupt_data``, ``Loader.warned()``) on both backends, or with ``jpeg_warnings="skip"`` substituted like any
bad sample (``Loader.skipped()``); evaluation delivers it without raising."""
import os

import numpy as np
import pytest
from PIL import Image

import jpegwarn
from vitdata import ConfigError, LoaderConfig, create_loader
from vitdata.data import selfid
from vitdata.data.index import open_index

from .conftest import FULL_VIEW

N, B = 24, 4


@pytest.fixture
def data(tmp_path):
    """24 self-identifying JPEGs; 3 rewritten as the warning kinds. Returns (root, {id: kind})."""
    root = str(tmp_path / "train")
    selfid.write_imagefolder(root, N, num_classes=2, size=48)
    idx = open_index(root, verbose=False)
    bad = {}
    for sid, kind in zip((1, 10, 22), jpegwarn.KINDS):
        with Image.open(idx.path(sid)) as im:
            pid, label = selfid.decode(np.asarray(im.convert("RGB")))
        with open(idx.path(sid), "wb") as f:
            f.write(jpegwarn.make(kind, pid, label))
        bad[sid] = kind
    return root, bad


def _cfg(root, backend, **kw):
    return LoaderConfig(data=root, batch_size=B, image_size=48, backend=backend, num_threads=1, num_workers=0, seed=1,
                        augment=FULL_VIEW, **kw)


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_files_with_decoder_warnings_are_delivered_and_counted_by_default(data, backend):
    root, bad = data
    ld = create_loader(_cfg(root, backend, on_error="skip"))
    try:
        ids = [i for b in ld for i in b.ids.tolist()]
        assert sorted(ids) == list(range(N))                     # each delivered, once
        assert ld.skipped(0) == []
        warned = ld.warned(0)
        assert sorted(w["id"] for w in warned) == sorted(bad)
        assert {w["reason"] for w in warned} == {"corrupt_data"}
        assert all(os.path.basename(w["path"]) == os.path.basename(ld.index.path(w["id"])) for w in warned)
    finally:
        ld.close()


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_the_skip_switch_substitutes_them_like_bad_samples(data, backend):
    root, bad = data
    ld = create_loader(_cfg(root, backend, on_error="skip", jpeg_warnings="skip"))
    try:
        ids = [i for b in ld for i in b.ids.tolist()]
        assert len(ids) == N and not set(ids) & set(bad)
        assert sorted(r["id"] for r in ld.skipped(0)) == sorted(bad)
        assert {r["reason"] for r in ld.skipped(0)} == {"corrupt_data"} and ld.warned(0) == []
    finally:
        ld.close()


def test_evaluation_delivers_them_without_raising_and_counts_them(data):
    root, bad = data
    ld = create_loader(_cfg(root, "torch"), split="eval")
    try:
        ids = [i for b in ld for i in b.ids.tolist()]
        assert sorted(ids) == list(range(N)) and sorted(w["id"] for w in ld.warned(0)) == sorted(bad)
    finally:
        ld.close()
    with pytest.raises(ConfigError, match="jpeg_warnings"):
        create_loader(_cfg(root, "torch", jpeg_warnings="maybe"))
