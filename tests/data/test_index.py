import io
import json
import os
import pickle
import tarfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from vitdata.data import selfid
from vitdata.errors import DataError, StateError
from vitdata.data.index import SampleIndex, build_index, main as index_main, open_index
from vitdata.data.reader import SampleReader


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _tar(path, members):
    """members: list of (name, bytes) written as regular files in order."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _jpg(i=0):
    return selfid.encode(selfid.make_image(i, 0, 16))


# -- round trips ------------------------------------------------------------------------------------------

def test_imagefolder_index_round_trips_every_sample_with_its_label(tmp_path):
    root = tmp_path / "folder"
    labels = selfid.write_imagefolder(str(root), 40, num_classes=4, size=32, fmt="png")
    idx = build_index(str(root))
    assert idx.kind == "imagefolder" and len(idx) == 40 and idx.classes == [f"class_{c:02d}" for c in range(4)]
    reader = SampleReader(idx)
    seen = set()
    for i in range(len(idx)):
        sid, y = selfid.decode(_decode(reader.read(i)))  # png: lossless, so the ids are exact
        assert y == labels[sid] == idx.label[i]
        assert idx.key(i) == f"class_{y:02d}/img_{sid:06d}.png"
        seen.add(sid)
    assert seen == set(range(40))


def test_tar_index_round_trips_and_keeps_shard_order(tmp_path):
    selfid.write_shards(str(tmp_path / "shards"), 250, num_classes=5, size=24, per_shard=100)
    idx = build_index(str(tmp_path / "shards"))
    assert idx.kind == "wds" and len(idx) == 250 and len(idx.sources) == 3 and idx.num_classes == 5
    reader = SampleReader(idx)
    for i in range(len(idx)):
        sid, y = selfid.decode(_decode(reader.read(i)))
        assert (sid, y) == (i, i % 5) == (i, idx.label[i])
        assert idx.key(i) == f"{i:08d}"


def test_brace_pattern_and_single_tar_select_the_named_shards(tmp_path):
    selfid.write_shards(str(tmp_path), 300, num_classes=3, size=16, per_shard=100)
    idx = build_index(str(tmp_path / "train-{000001..000002}.tar"))
    assert len(idx) == 200 and idx.key(0) == f"{100:08d}"
    assert len(build_index(str(tmp_path / "train-000000.tar"))) == 100


def test_extensions_are_case_insensitive_and_other_files_ignored(tmp_path):
    for c, names in {"a": ["x.JPG", "y.Jpeg", "notes.txt"], "b": ["z.PNG", "sub/w.jpg"]}.items():
        for n in names:
            p = tmp_path / c / n
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(_jpg())
    idx = build_index(str(tmp_path))
    assert sorted(idx.key(i) for i in range(len(idx))) == ["a/x.JPG", "a/y.Jpeg", "b/sub/w.jpg", "b/z.PNG"]
    assert idx.label.tolist() == [0, 0, 1, 1]


def test_index_is_saved_without_pickle_and_loads_identically(tmp_path):
    selfid.write_shards(str(tmp_path / "s"), 30, size=16, per_shard=10)
    idx = build_index(str(tmp_path / "s"), checksums=True)
    idx.save(str(tmp_path / "i.npz"))
    back = SampleIndex.load(str(tmp_path / "i.npz"))
    assert back.fingerprint == idx.fingerprint
    assert np.array_equal(back.checksum, idx.checksum)
    with np.load(tmp_path / "i.npz", allow_pickle=False) as z:  # loads with pickles refused
        assert json.loads(bytes(z["header"]))["format_version"] == 2


def test_a_tampered_or_newer_index_file_is_refused(tmp_path):
    selfid.write_shards(str(tmp_path / "s"), 10, size=16)
    idx = build_index(str(tmp_path / "s"))
    p = str(tmp_path / "i.npz")
    idx.save(p)
    idx.label[0] += 1
    np.savez(p, **{**dict(np.load(p)), "label": idx.label})
    with pytest.raises(StateError, match="fingerprint"):
        SampleIndex.load(p)
    (tmp_path / "junk.npz").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(StateError):
        SampleIndex.load(str(tmp_path / "junk.npz"))


def test_stale_index_is_detected_and_rebuilt_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "f"
    selfid.write_imagefolder(str(root), 8, num_classes=2, size=16)
    assert len(open_index(str(root))) == 8
    assert len(open_index(str(root))) == 8 and "rebuilding" not in capsys.readouterr().err  # cached, fresh
    (root / "class_00" / "new.jpg").write_bytes(_jpg())
    assert len(open_index(str(root))) == 9
    assert "rebuilding" in capsys.readouterr().err
    shards = tmp_path / "s"
    selfid.write_shards(str(shards), 20, size=16, per_shard=10)
    assert len(open_index(str(shards))) == 20
    time.sleep(0.01)
    selfid.write_shards(str(shards), 25, size=16, per_shard=10)
    assert len(open_index(str(shards))) == 25 and "rebuilding" in capsys.readouterr().err


# -- real data ---------------------------------------------------------------------------------------------

def test_cifar10_shards_give_50000_samples_5000_per_class(cifar10_shards):
    idx = build_index(str(cifar10_shards))
    assert len(idx) == 50000 and idx.num_classes == 10 and idx.classes[0] == "airplane"
    assert np.bincount(idx.label, minlength=10).tolist() == [5000] * 10
    assert idx.classes[idx.label[0]] in idx.key(0)  # keys look like train_<class>_NNNN


def test_imagenet_samples_index_as_403_classes_and_bytes_decode_to_the_original_pixels(imagenet_samples):
    idx = build_index(str(imagenet_samples))
    assert len(idx) == 403 and idx.num_classes == 403
    reader = SampleReader(idx)
    for i in range(len(idx)):
        data = reader.read(i)
        original = open(os.path.join(str(imagenet_samples), idx.key(i)), "rb").read()
        assert data == original
        assert np.array_equal(_decode(data), np.asarray(Image.open(idx.path(i)).convert("RGB")))
    assert any("'" in idx.key(i) for i in range(len(idx)))  # the apostrophe file name is handled


# -- reader -------------------------------------------------------------------------------------------------

def _read_all(reader, ids):
    return [zlib.crc32(reader.read(i)) for i in ids]


def test_reader_is_thread_safe_and_process_safe(tmp_path):
    selfid.write_shards(str(tmp_path), 200, size=16, per_shard=50)
    idx = build_index(str(tmp_path))
    reader = SampleReader(idx)
    ids = np.random.default_rng(0).integers(0, 200, 2000).tolist()
    expect = _read_all(reader, ids)
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda c: _read_all(reader, c), [ids[k::4] for k in range(4)]))
    assert [x for k in range(4) for x in got[k]] == [expect[j] for k in range(4) for j in range(k, 2000, 4)]
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._fds == {} and _read_all(clone, ids[:50]) == expect[:50]
    with ProcessPoolExecutor(2) as ex:  # each worker opens its own descriptors
        assert list(ex.map(_read_all, [reader, reader], [ids[:100], ids[100:200]])) == [expect[:100], expect[100:200]]


def test_reader_names_the_file_when_it_changed_or_vanished(tmp_path):
    root = tmp_path / "f"
    selfid.write_imagefolder(str(root), 4, num_classes=2, size=16)
    idx = build_index(str(root))
    reader = SampleReader(idx)
    with open(idx.path(0), "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match="size_changed") as e:
        reader.read(0)
    assert e.value.path == idx.path(0) and e.value.sample_id == 0
    os.unlink(idx.path(1))
    with pytest.raises(DataError, match=r"\[missing\]"):
        reader.read(1)
    os.unlink(idx.path(2))
    os.mkfifo(idx.path(2))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="read_timeout"):  # never blocks on a FIFO
        reader.read(2)
    assert time.perf_counter() - t0 < 1


def test_flipped_bytes_are_caught_only_with_checksum_verification(tmp_path):
    selfid.write_shards(str(tmp_path), 20, size=16, per_shard=20)
    idx = build_index(str(tmp_path), checksums=True)
    shard = idx.sources[0]
    with open(shard, "r+b") as f:
        pos = int(idx.offset[3]) + 100
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x10]))
    SampleReader(idx).read(3)  # unverified: silently different bytes
    with pytest.raises(DataError, match="checksum_mismatch"):
        SampleReader(idx, verify=True).read(3)


# -- bad input: each case raises a clear error naming the file ------------------------------------------------

def test_a_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(DataError, match="not_found") as e:
        build_index(str(tmp_path / "nope"))
    assert "nope" in str(e.value)
    with pytest.raises(DataError, match="not_found"):
        build_index(str(tmp_path / "x-{000..002}.tar"))


def test_an_empty_dataset_is_refused(tmp_path):
    (tmp_path / "empty_folder" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="empty_dataset"):
        build_index(str(tmp_path / "empty_folder"))
    (tmp_path / "no_classes").mkdir()
    with pytest.raises(DataError, match="empty_dataset"):
        build_index(str(tmp_path / "no_classes"))
    _tar(tmp_path / "e.tar", [("readme.txt", b"hi")])
    with pytest.raises(DataError, match="empty_dataset"):
        build_index(str(tmp_path / "e.tar"))


def test_a_member_without_a_label_names_the_shard_and_offset(tmp_path):
    _tar(tmp_path / "a.tar", [("k1.jpg", _jpg()), ("k1.cls", b"0"), ("k2.jpg", _jpg())])
    with pytest.raises(DataError, match="missing_label") as e:
        build_index(str(tmp_path / "a.tar"))
    assert e.value.path.endswith("a.tar") and e.value.offset is not None and "k2" in str(e.value)
    _tar(tmp_path / "b.tar", [("k1.cls", b"1")])
    with pytest.raises(DataError, match="missing_image"):
        build_index(str(tmp_path / "b.tar"))


def test_duplicate_keys_are_errors_within_and_across_shards(tmp_path):
    _tar(tmp_path / "d1.tar", [("k.jpg", _jpg()), ("k.cls", b"0"), ("j.jpg", _jpg()), ("j.cls", b"0"),
                               ("k.jpg", _jpg()), ("k.cls", b"0")])
    with pytest.raises(DataError, match="duplicate_key"):
        build_index(str(tmp_path / "d1.tar"))
    os.makedirs(tmp_path / "two")
    for n in ("s0.tar", "s1.tar"):
        _tar(tmp_path / "two" / n, [("k.jpg", _jpg()), ("k.cls", b"0")])
    with pytest.raises(DataError, match="duplicate_key") as e:
        build_index(str(tmp_path / "two"))
    assert "s0.tar" in str(e.value) and "s1.tar" in str(e.value)
    _tar(tmp_path / "d2.tar", [("k.jpg", _jpg()), ("k.png", _jpg()), ("k.cls", b"0")])
    with pytest.raises(DataError, match="duplicate_key"):
        build_index(str(tmp_path / "d2.tar"))


def test_labels_that_are_not_digits_or_outside_the_class_range_are_refused(tmp_path):
    _tar(tmp_path / "cat.tar", [("k.jpg", _jpg()), ("k.cls", b"cat")])
    with pytest.raises(DataError, match="bad_label"):
        build_index(str(tmp_path / "cat.tar"))
    os.makedirs(tmp_path / "c")
    _tar(tmp_path / "c" / "s.tar", [("k.jpg", _jpg()), ("k.cls", b"1000")])
    (tmp_path / "c" / "classes.json").write_text(json.dumps([f"c{i}" for i in range(1000)]))
    with pytest.raises(DataError, match="bad_label") as e:
        build_index(str(tmp_path / "c"))
    assert "1000" in str(e.value) and "s.tar" in str(e.value)
    with pytest.raises(DataError, match="bad_label"):
        build_index(str(tmp_path / "cat.tar").replace("cat", "c/s"), num_classes=10)


def test_unreadable_entries_are_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "fine.jpg").write_bytes(_jpg())
    (tmp_path / "a" / "dir.jpg").mkdir()
    with pytest.raises(DataError, match="unreadable") as e:
        build_index(str(tmp_path))
    assert "dir.jpg" in str(e.value)
    os.rmdir(tmp_path / "a" / "dir.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "a" / "broken.jpg")
    with pytest.raises(DataError, match="unreadable") as e:
        build_index(str(tmp_path))
    assert "broken.jpg" in str(e.value)


# -- hostile tars: member names never become paths; damage keeps what came before -----------------------------

def test_truncated_shard_keeps_the_samples_before_the_cut(tmp_path):
    selfid.write_shards(str(tmp_path), 10, size=16, per_shard=10)
    shard = tmp_path / "train-000000.tar"
    full = build_index(str(shard))
    cut = int(full.offset[6]) + 10  # inside sample 6's image payload
    data = shard.read_bytes()[:cut]
    (tmp_path / "cut.tar").write_bytes(data)
    idx = build_index(str(tmp_path / "cut.tar"))
    assert len(idx) == 6 and [s["reason"] for s in idx.skipped] == ["truncated"]


def test_links_fifos_and_traversal_names_are_counted_never_followed(tmp_path):
    path = tmp_path / "h.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        def add(name, data=b"", kind=tarfile.REGTYPE, link=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
        add("../../evil.jpg", _jpg())
        add("../../evil.cls", b"0")
        add("link.jpg", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add("fifo.jpg", kind=tarfile.FIFOTYPE)
        add("d" * 150 + ".jpg", _jpg(1))  # GNU long name
        add("d" * 150 + ".cls", b"1")
    before = set(os.listdir(tmp_path.parent))
    idx = build_index(str(path))
    assert set(os.listdir(tmp_path.parent)) == before
    assert sorted(idx.key(i) for i in range(len(idx))) == ["d" * 150, "evil"]
    reasons = sorted(s["reason"] for s in idx.skipped)
    assert reasons == ["bad_key", "bad_key", "non_regular_member", "non_regular_member"]


def test_an_oversized_member_claim_is_refused_before_allocation(tmp_path):
    path = tmp_path / "big.tar"
    _tar(path, [("a.jpg", _jpg()), ("a.cls", b"0"), ("b.jpg", b"x" * 4096), ("b.cls", b"0"),
                ("c.jpg", _jpg()), ("c.cls", b"0")])
    idx = build_index(str(path), member_cap=1024)
    assert [idx.key(i) for i in range(len(idx))] == ["a", "c"]
    assert [s["reason"] for s in idx.skipped] == ["member_too_large"]
    # a 10 GB claim in a tiny file: truncated, no allocation attempted
    raw = bytearray(path.read_bytes())
    hdr = tarfile.TarInfo("z.jpg")
    hdr.size = 10 << 30
    block = hdr.tobuf(format=tarfile.GNU_FORMAT)
    end = raw.rfind(b"c.cls")
    end = (end // 512 + 2) * 512
    (tmp_path / "claim.tar").write_bytes(bytes(raw[:end]) + block + b"\0" * 1024)
    idx = build_index(str(tmp_path / "claim.tar"))
    assert len(idx) == 3 and idx.skipped[-1]["reason"] == "truncated"


def test_a_corrupt_header_stops_the_shard_with_a_counted_reason(tmp_path):
    selfid.write_shards(str(tmp_path), 6, size=16, per_shard=6)
    shard = tmp_path / "train-000000.tar"
    full = build_index(str(shard))
    raw = bytearray(shard.read_bytes())
    raw[int(full.offset[3]) - 512 + 10] ^= 0xFF  # damage sample 3's header
    (tmp_path / "bad.tar").write_bytes(bytes(raw))
    idx = build_index(str(tmp_path / "bad.tar"))
    assert len(idx) == 3 and idx.skipped[0]["reason"] == "bad_header"


# -- CLI ------------------------------------------------------------------------------------------------------

def test_cli_index_prints_a_summary_and_names_bad_paths(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    selfid.write_shards(str(tmp_path / "s"), 20, num_classes=4, size=16, per_shard=10)
    assert index_main([str(tmp_path / "s"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 20 and out["classes"] == 4 and out["kind"] == "wds"
    from vitdata.cli import main as cli_main
    assert cli_main(["index", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vitdata index: error: DataError: [not_found]")


def test_the_fingerprint_is_computed_once_per_index_not_per_state_dict(tmp_path, monkeypatch):
    """A loader's state_dict() names the index by its fingerprint: hashing 1.28 M rows per checkpoint cost
    about 0.9 s, so it is computed once per index object."""
    import hashlib

    from vitdata.data import index as index_mod
    from vitdata.loader.loader import LoaderConfig, create_loader

    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    selfid.write_imagefolder(str(tmp_path / "d"), 8, num_classes=2, size=16)
    ld = create_loader(LoaderConfig(data=str(tmp_path / "d"), batch_size=4, image_size=16, backend="torch",
                                    num_workers=0))
    try:
        first = ld.state_dict()["fingerprint"]["index"]
        calls = []
        real = hashlib.sha256
        monkeypatch.setattr(index_mod.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
        for _ in range(3):
            assert ld.state_dict()["fingerprint"]["index"] == first
        assert calls == []
    finally:
        ld.close()
