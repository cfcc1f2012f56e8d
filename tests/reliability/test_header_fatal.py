"""A JPEG that libjpeg refuses from its headers alone (a scan naming a component the frame lacks, an
over-subscribed Huffman table, invalid progressive parameters, ...) is refused by the header checks as
``decode_error`` with libjpeg's words, on both backends: a counted skip that never reaches the decoder, so on
DALI no step fails, nothing is probed or redone and nothing is quarantined (docs/reliability.md, header checks)."""
import os

import numpy as np
import pytest
from PIL import Image

import jpegfatal
from vitdata import LoaderConfig, create_loader
from vitdata.data import selfid

from .conftest import FULL_VIEW, drain

N, B = 24, 4
FATAL = ("bad_component", "huffman_oversubscribed", "progressive_dc_se", "quant_table_undefined")


def _cfg(root, backend, **kw):
    return LoaderConfig(data=root, batch_size=B, image_size=32, backend=backend, num_threads=1, num_workers=0,
                        seed=3, augment=FULL_VIEW, **kw)


@pytest.fixture(scope="module")
def fatal_data(tmp_path_factory):
    """24 images of 2 classes; the files at index positions 1, 8, 14 and 22 replaced by header-fatal JPEGs of
    the same sample and label. Returns (root, {id: kind})."""
    root = str(tmp_path_factory.mktemp("fatal") / "train")
    selfid.write_imagefolder(root, N, num_classes=2, size=32)
    os.environ.setdefault("VITDATA_CACHE", str(tmp_path_factory.mktemp("cache")))
    probe = create_loader(_cfg(root, "torch"))
    bad = {}
    for sid, kind in zip((1, 8, 14, 22), FATAL):
        path = probe.index.path(sid)
        with Image.open(path) as im:
            pid, label = selfid.decode(np.asarray(im.convert("RGB")))
        with open(path, "wb") as f:
            f.write(jpegfatal.make(kind, pid, label, size=32))
        bad[sid] = kind
    probe.close()
    return root, bad


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_a_header_fatal_jpeg_is_a_counted_skip_that_never_reaches_the_decoder(fatal_data, backend):
    root, bad = fatal_data
    ld = create_loader(_cfg(root, backend, on_error="skip"))
    try:
        for epoch in range(2):
            ld.set_epoch(epoch)
            ids = [i for b in ld for i in b.ids.tolist()]
            assert len(ids) == N and not set(ids) & set(bad)
            rep = ld.skipped(epoch)
            assert sorted(r["id"] for r in rep) == sorted(bad) and {r["reason"] for r in rep} == {"decode_error"}
        assert len(ld.quarantine) == 0               # no decoder refused anything
        if backend == "dali":                        # no failed step: the probe and the graph's twin never built
            assert ld._backend._probe is None and ld._backend._twin is None
    finally:
        ld.close()


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_evaluation_with_raise_names_each_file_with_decode_error_and_libjpegs_words(fatal_data, backend):
    root, bad = fatal_data
    ld = create_loader(_cfg(root, backend, on_error="raise"), split="eval")
    try:
        errors, seen = drain(ld)
        assert sorted(e.sample_id for e in errors) == sorted(bad)
        for e in errors:
            assert e.reason == "decode_error" and e.path == ld.index.describe(e.sample_id)
            assert jpegfatal.KINDS[bad[e.sample_id]] in str(e) and "read from the headers" in str(e)
        assert sorted(seen) == sorted(set(range(N)) - set(bad)) and len(ld.quarantine) == 0
    finally:
        ld.close()
