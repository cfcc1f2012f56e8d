"""With the PNG data check (the default), a PNG that libpng would refuse is a counted skip on both backends:
``decode_error``, substituted by the usual rule, never a failed DALI step (no probe, no quarantine, no redo)."""
import numpy as np
import pytest
from PIL import Image

from vitdata import LoaderConfig, create_loader
from vitdata.data import selfid
from vitdata.data.index import open_index
from vitdata.loader.backends import dali_redo

from . import decodefail
from .conftest import FULL_VIEW

N, B = 24, 4


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_pngs_libpng_refuses_are_skipped_before_any_decoder(tmp_path, monkeypatch, backend):
    root = str(tmp_path / "train")
    selfid.write_imagefolder(root, N, num_classes=2, size=32)
    idx = open_index(root, verbose=False)
    bad = [3, 12, 20]
    for k, sid in enumerate(bad):
        with Image.open(idx.path(sid)) as im:
            pid, label = selfid.decode(np.asarray(im.convert("RGB")))
        with open(idx.path(sid), "wb") as f:
            f.write(decodefail.make(decodefail.kind_at(k), pid, label))

    def no_probe(*a, **k):
        raise AssertionError("a step failed in the decoder")

    monkeypatch.setattr(dali_redo.Probe, "refused", no_probe)
    ld = create_loader(LoaderConfig(data=root, batch_size=B, image_size=32, backend=backend, num_threads=1,
                                    num_workers=0, seed=3, augment=FULL_VIEW, on_error="skip"))
    try:
        delivered = [i for b in ld for i in b.ids.tolist()]
        skipped = ld.skipped(0)
        assert len(delivered) == N and not set(delivered) & set(bad)
        assert sorted(r["id"] for r in skipped) == bad and {r["reason"] for r in skipped} == {"decode_error"}
        assert len(ld.quarantine) == 0
    finally:
        ld.close()
