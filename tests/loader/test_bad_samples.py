"""Bad samples: skipped and counted with on_error="skip", a DataError naming file and id with "raise"."""
import os

import pytest

from vitdata import DataError, LoaderConfig, create_loader
from vitdata.data import selfid
from vitdata.loader.config import AugmentConfig



def _huge_png():
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "train"
    selfid.write_imagefolder(str(root), 32, num_classes=2, size=32)
    bad = {"class_00/img_000004.jpg": b"<html>404</html>", "class_01/img_000007.jpg": _huge_png()}
    for rel, blob in bad.items():
        with open(root / rel, "wb") as f:
            f.write(blob)
    return str(root), sorted(bad)


def cfg(data, backend, **kw):
    return LoaderConfig(data=data, batch_size=4, image_size=32, backend=backend, num_workers=2,
                        augment=AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False), **kw)


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_bad_samples_are_skipped_substituted_and_counted(bad_data, backend):
    data, bad = bad_data
    loader = create_loader(cfg(data, backend))
    try:
        bad_ids = {i for i in range(len(loader.index)) if any(loader.index.path(i).endswith(b) for b in bad)}
        for epoch in range(2):
            loader.set_epoch(epoch)
            ids = [i for b in loader for i in b.ids.tolist()]
            assert len(ids) == 32 and not set(ids) & bad_ids
            report = loader.skipped(epoch)
            assert {r["id"] for r in report} == bad_ids and len(report) == 2
            assert {r["reason"] for r in report} == {"unsupported_format", "too_many_pixels"}
            assert all(os.path.basename(r["path"]) in {os.path.basename(b) for b in bad} for r in report)
            order = loader.sampler.epoch_ids(epoch).reshape(-1).tolist()
            for r in report:   # substitute = next usable id of the epoch order
                pos = order.index(r["id"])
                nxt = next(order[(pos + k) % 32] for k in range(1, 32) if order[(pos + k) % 32] not in bad_ids)
                assert r["substitute"] == nxt
    finally:
        loader.close()


def test_raise_mode_names_the_file_the_sample_and_the_reason(bad_data):
    data, bad = bad_data
    loader = create_loader(cfg(data, "dali", on_error="raise"))
    try:
        with pytest.raises(DataError) as ei:
            for _ in loader:
                pass
        e = ei.value
        assert e.reason in ("unsupported_format", "too_many_pixels")
        assert any(e.path.endswith(b) for b in bad) and e.sample_id is not None
        assert f"sample {e.sample_id}" in str(e)
    finally:
        loader.close()


def test_eval_raises_by_default(bad_data):
    data, _ = bad_data
    loader = create_loader(cfg(data, "torch"), split="eval")
    try:
        with pytest.raises(DataError):
            list(loader)
    finally:
        loader.close()
