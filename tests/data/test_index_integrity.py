"""A damaged, truncated or newer sample index (or epoch plan) on disk is refused with a StateError, and
loading one never unpickles anything (docs/reliability.md D3, D4, D5)."""
import json
import pickle

import numpy as np
import pytest

from vitdata.data import selfid
from vitdata.data.index import SampleIndex, build_index
from vitdata.errors import StateError
from damage import NoPickle as _NoPickle, flips as _flips


@pytest.fixture(autouse=True)
def _index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "index-cache"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("state") / "train"
    selfid.write_imagefolder(str(root), 96, num_classes=4, size=16)
    return str(root)


def test_a_tampered_truncated_or_newer_index_is_refused_without_pickle(data, tmp_path):
    """docs/reliability.md D3 (corruption), D4 (pickle-free), D5 (versioning)."""
    idx = build_index(data)
    path = str(tmp_path / "idx.npz")
    idx.save(path)
    blob = open(path, "rb").read()
    rng = np.random.default_rng(3)
    refused = loaded_same = 0
    with _NoPickle():
        for bad in _flips(blob, 300, rng) + [blob[:int(rng.integers(1, len(blob)))] for _ in range(100)]:
            with open(path, "wb") as f:
                f.write(bad)
            try:
                got = SampleIndex.load(path)
            except StateError:
                refused += 1
            else:   # a flip in bytes nothing reads (zip padding, the build time) may leave the content intact
                assert got.fingerprint == idx.fingerprint
                loaded_same += 1
    print(f"\nD3 index: {refused} of 400 damaged files refused, {loaded_same} loaded with identical content")
    assert refused + loaded_same == 400
    hdr = {"format": "vitdata-index", "format_version": 99}
    np.savez(path, header=np.frombuffer(json.dumps(hdr).encode(), np.uint8))
    with pytest.raises(StateError, match=r"written by a newer vitdata \(format 99\)"):
        SampleIndex.load(path)
    with open(path, "wb") as f:      # D4a: a pickle under the index's name
        pickle.dump({"x": 1}, f)
    with _NoPickle(), pytest.raises(StateError):
        SampleIndex.load(path)


def _zip_field_damage(blob: bytes) -> list[bytes]:
    """Copies of a .npz (zip) with the first member's compression method set to an unknown value (226) and
    with its flags marking it encrypted, in the local header and the central directory: zipfile raises
    NotImplementedError and RuntimeError for these, not BadZipFile."""
    local, central = blob.find(b"PK\x03\x04"), blob.find(b"PK\x01\x02")
    out = []
    for where_local, where_central, value in ((8, 10, b"\xe2\x00"), (6, 8, b"\x01\x00")):
        b = bytearray(blob)
        b[local + where_local:local + where_local + 2] = value
        b[central + where_central:central + where_central + 2] = value
        out.append(bytes(b))
    return out


def test_an_index_or_plan_with_a_damaged_zip_method_or_flags_field_is_refused(data, tmp_path):
    """docs/reliability.md D3 (corruption)."""
    from vitdata.data.sampler import EpochPlan

    idx_path, plan_path = str(tmp_path / "idx.npz"), str(tmp_path / "plan.npz")
    build_index(data).save(idx_path)
    EpochPlan(weights=np.ones(96)).save(plan_path)
    for path, load in ((idx_path, SampleIndex.load), (plan_path, EpochPlan.load)):
        good = open(path, "rb").read()
        for bad in _zip_field_damage(good):
            open(path, "wb").write(bad)
            with _NoPickle(), pytest.raises(StateError):
                load(path)
