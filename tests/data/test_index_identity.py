"""The index proves it belongs to the data it is used for: a cached index of another dataset, or of a shard
since replaced by another of the same size with its mtime kept, is rebuilt with a message, never used."""
import io
import os
import shutil
import tarfile
import time

import numpy as np
import pytest

from vitdata.data import selfid
from vitdata.data.index import SampleIndex, default_index_path, open_index
from vitdata.data.reader import SampleReader


def _shard(path, prefix: str, label: int, n: int = 6):
    """n samples whose image bytes are the same in every shard written here: two shards of one size."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(n):
            for ext, data in (("jpg", selfid.encode(selfid.make_image(i, 0, 16))), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"{prefix}{i:04d}.{ext}")
                info.size, info.mtime = len(data), 0
                tf.addfile(info, io.BytesIO(data))


def _keep_times(path, was: os.stat_result):
    os.utime(path, ns=(was.st_atime_ns, was.st_mtime_ns))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_shard_replaced_by_another_of_the_same_size_with_its_mtime_kept_is_reindexed(tmp_path, cache, capsys):
    d = tmp_path / "shards"
    d.mkdir()
    _shard(d / "a.tar", "aaa", 1)
    _shard(d / "b.tar", "bbb", 2)
    (d / "classes.json").write_text('["0", "1", "2", "3"]')
    idx = open_index(str(d))
    assert sorted(set(idx.label.tolist())) == [1, 2]
    was = os.stat(d / "a.tar")
    new = tmp_path / "other.tar"
    _shard(new, "ccc", 3)
    assert os.path.getsize(new) == was.st_size
    shutil.copyfile(new, d / "a.tar")          # in place: the same inode, size and (restored) mtime
    _keep_times(d / "a.tar", was)
    assert os.stat(d / "a.tar").st_mtime_ns == was.st_mtime_ns and os.stat(d / "a.tar").st_size == was.st_size
    capsys.readouterr()
    idx = open_index(str(d))
    assert "a.tar" in capsys.readouterr().err
    assert sorted(set(idx.label.tolist())) == [2, 3]
    reader = SampleReader(idx)
    assert {idx.key(i)[:3] for i in range(len(idx))} == {"bbb", "ccc"}
    assert all(reader.read(i) for i in range(len(idx)))


def test_the_content_probe_alone_sees_a_replaced_shard(tmp_path, cache):
    """On a filesystem that keeps no ctime, the probe of each shard (names, sizes and labels of its first and
    last samples) still tells two shards of one size apart."""
    d = tmp_path / "shards"
    d.mkdir()
    _shard(d / "a.tar", "aaa", 1)
    idx = open_index(str(d), num_classes=4)
    was = os.stat(d / "a.tar")
    _shard(tmp_path / "x.tar", "aab", 1)      # one letter of every name differs
    shutil.copyfile(tmp_path / "x.tar", d / "a.tar")
    _keep_times(d / "a.tar", was)
    idx.source_stats[:, 2] = os.stat(d / "a.tar").st_ctime_ns   # as if the ctime had not moved
    assert "other content" in idx.stale_reason()
    # a label changed in place is seen through the ctime (and, for the first and last samples, the probe)
    idx = open_index(str(d), num_classes=4)
    data = bytearray((d / "a.tar").read_bytes())
    at = bytes(data).index(b"aab0005.cls")
    cls = at + 512
    assert data[cls:cls + 1] == b"1"
    data[cls:cls + 1] = b"3"
    was = os.stat(d / "a.tar")
    (d / "a.tar").write_bytes(bytes(data))
    _keep_times(d / "a.tar", was)
    reason = idx.stale_reason()
    assert reason is not None and "a.tar" in reason
    idx.source_stats[:, 2] = os.stat(d / "a.tar").st_ctime_ns
    assert "other content" in idx.stale_reason()


def test_a_file_of_an_imagefolder_rewritten_with_size_and_mtime_kept_is_seen(tmp_path, cache):
    root = tmp_path / "f"
    selfid.write_imagefolder(str(root), 6, num_classes=2, size=16)
    idx = open_index(str(root))
    p = idx.path(3)
    was = os.stat(p)
    data = bytearray(open(p, "rb").read())
    data[-3] ^= 0x01
    time.sleep(0.01)
    open(p, "wb").write(bytes(data))
    _keep_times(p, was)
    assert os.path.basename(p) in idx.stale_reason()
    # a file added to a class folder whose mtime is then set back: the folder's ctime moved
    d = os.path.dirname(p)
    dwas = os.stat(d)
    idx = open_index(str(root))
    shutil.copyfile(p, os.path.join(d, "added.jpg"))
    _keep_times(d, dwas)
    assert "entry was added" in idx.stale_reason()
    assert len(open_index(str(root))) == 7


def test_a_cached_index_copied_from_another_dataset_is_not_used(tmp_path, cache, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    selfid.write_imagefolder(str(a), 8, num_classes=2, size=16)
    selfid.write_imagefolder(str(b), 5, num_classes=5, size=16)
    open_index(str(a))
    shutil.copyfile(default_index_path(str(a)), default_index_path(str(b)))
    capsys.readouterr()
    idx = open_index(str(b))
    assert "built for" in capsys.readouterr().err
    assert len(idx) == 5 and idx.num_classes == 5 and all(idx.path(i).startswith(str(b)) for i in range(5))
    # a dataset moved to another path is re-indexed there too (its sources would name the old path)
    open_index(str(a))
    shutil.move(str(a), str(tmp_path / "moved"))
    shutil.copyfile(default_index_path(str(a)), default_index_path(str(tmp_path / "moved")))
    idx = open_index(str(tmp_path / "moved"))
    assert all(idx.path(i).startswith(str(tmp_path / "moved")) for i in range(len(idx)))


def test_a_cached_index_of_format_1_is_rebuilt(tmp_path, cache, capsys):
    d = tmp_path / "s"
    selfid.write_shards(str(d), 12, size=16, per_shard=6)
    idx = open_index(str(d))
    path = default_index_path(str(d))
    with np.load(path) as z:
        arrays = dict(z)
    arrays["source_stats"] = arrays["source_stats"][:, :2]
    np.savez(path, **arrays)
    old = SampleIndex.load(path)
    assert (old.source_stats[:, 2] == -1).all() and old.fingerprint == idx.fingerprint
    capsys.readouterr()
    open_index(str(d))
    assert "older vitdata" in capsys.readouterr().err
