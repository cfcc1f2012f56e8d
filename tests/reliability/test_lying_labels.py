"""docs/reliability.md I5 through the loader: a tar sample whose ``.cls`` lies (10^6 among labels < 10 without
classes.json, 2^24) is that one sample's ``bad_label`` skip, and the model sees the true class count. (The
10^23 and 2^64 labels are tested in tests/data/test_labels.py under a memory limit: a regression there
would exhaust this process's memory.)"""
import io
import tarfile

import pytest

from vitdata import LoaderConfig, create_loader
from vitdata.data import selfid
from .conftest import FULL_VIEW


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("lying") / "shards"
    selfid.write_shards(str(root), 30, num_classes=10, size=16, per_shard=30)
    with tarfile.open(root / "train-000001.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for key, cls in (("million", b"1000000"), ("huge", str(1 << 24).encode())):
            for name, data in ((f"{key}.jpg", selfid.encode(selfid.make_image(0, 0, 16))), (f"{key}.cls", cls)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return str(root)


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_lying_labels_are_each_their_samples_bad_label_skip(shards, backend):
    ld = create_loader(LoaderConfig(data=shards, batch_size=4, image_size=16, backend=backend, num_workers=0,
                                    on_error="skip", augment=FULL_VIEW))
    try:
        assert ld.index.num_classes == 10
        labels = [int(y) for b in ld for y in b.labels.tolist()]
        skipped = ld.skipped(0)
    finally:
        ld.close()
    assert all(0 <= y < 10 for y in labels)
    keys = sorted(s["path"].rsplit("(", 1)[-1].rstrip(")") for s in skipped)
    assert keys == ["huge", "million"] and {s["reason"] for s in skipped} == {"bad_label"}
