"""WebDataset shards as published: gzip-compressed, and labels in .class / .label / .txt / a .json
field."""
import gzip
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest

from vitdata import DataError, build_index
from vitdata.data import selfid


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))


def gzip_shards(directory, n=12, per_shard=6):
    paths = selfid.write_shards(str(directory), n, num_classes=3, size=16, per_shard=per_shard)
    out = []
    for p in paths:
        with open(p, "rb") as src, gzip.open(p + ".gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.unlink(p)
        out.append(p + ".gz")
    return out


def test_gzip_shards_are_inflated_once_into_the_cache_and_indexed(tmp_path):
    gz = gzip_shards(tmp_path / "d")
    idx = build_index(str(tmp_path / "d"))
    assert len(idx) == 12 and idx.labels_checked and np.array_equal(idx.label, np.arange(12) % 3)
    assert all(s.startswith(str(tmp_path / "cache")) and s.endswith(".tar") for s in idx.sources)
    mtimes = [os.stat(s).st_mtime_ns for s in idx.sources]
    again = build_index(gz[0])                          # one .tar.gz file works too, and is not inflated again
    assert len(again) == 6 and os.stat(again.sources[0]).st_mtime_ns == mtimes[0]


def test_a_truncated_gzip_shard_is_refused_naming_it(tmp_path):
    (gz,) = gzip_shards(tmp_path / "d", n=6)
    data = open(gz, "rb").read()
    bad = tmp_path / "d" / "cut.tgz"
    bad.write_bytes(data[: len(data) // 2])
    os.unlink(gz)
    with pytest.raises(DataError, match=r"cut.tgz.*(cannot inflate|inflated to)"):
        build_index(str(bad))
    # a cut whose last 4 bytes read as a huge size is refused as cut short, not as a lack of disk space
    bad.write_bytes(data[: len(data) // 2] + b"\xff\xff\xff\xf0")
    with pytest.raises(DataError, match=r"cut.tgz.*cannot inflate.*cut short") as e:
        build_index(str(bad))
    assert e.value.reason == "truncated"


def write_shard(path, members):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def image(i):
    return selfid.encode(selfid.make_image(i, 0, 16), "jpeg")


@pytest.mark.parametrize("label, member", [("class", "{}.class"), ("label", "{}.label"), ("txt", "{}.txt")])
def test_labels_in_class_label_or_txt_members_by_option(tmp_path, label, member):
    p = tmp_path / "a.tar"
    write_shard(p, [m for i in range(4) for m in ((f"{i}.jpg", image(i)), (member.format(i), str(i % 2).encode()))])
    idx = build_index(str(p), label=label)
    assert idx.label.tolist() == [0, 1, 0, 1]
    with pytest.raises(DataError, match=r"no .cls member.*label_member='class'"):
        build_index(str(p))


def test_a_json_field_label_follows_the_bad_label_rules(tmp_path):
    p = tmp_path / "j.tar"
    meta = [{"cls": 1}, {"cls": "2"}, {"cls": "x"}, {"other": 0}]
    write_shard(p, [m for i, d in enumerate(meta)
                    for m in ((f"{i}.jpg", image(i)), (f"{i}.json", json.dumps(d).encode()))])
    idx = build_index(str(p), label="json:cls", bad_labels="mark")
    assert idx.label.tolist() == [1, 2, -1, -1]
    reasons = [s["detail"] for s in idx.skipped if s["reason"] == "bad_label"]
    assert any("expected a non-negative integer" in r for r in reasons) and any("no integer field" in r for r in reasons)
    with pytest.raises(DataError, match="bad_label"):
        build_index(str(p), label="json:cls")
