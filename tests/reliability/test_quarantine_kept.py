"""A file a decoder refused once is skipped before reading by every later run on the same data: a fresh
process, an evaluation loader, another rank. The store beside the index is keyed by the file's identity
(invalidated when the file changes) and merged under a lock, so concurrent writers never lose an entry."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from vitdata import LoaderConfig, create_loader
from vitdata.data import selfid
from vitdata.data.badfiles import BadFiles, store_path
from vitdata.data.index import open_index

from . import decodefail
from .conftest import FULL_VIEW, drain

N, B = 24, 4


def _cfg(root, backend, **kw):
    return LoaderConfig(data=root, batch_size=B, image_size=32, backend=backend, num_threads=1, num_workers=0,
                        seed=3, augment=FULL_VIEW, check_png_data=False, **kw)   # decodefail.py


def _dataset(tmp_path) -> tuple[str, list[int]]:
    """24 images, 3 of them failing in the decoder (the kinds in turn); returns (root, bad index positions)."""
    root = str(tmp_path / "train")
    selfid.write_imagefolder(root, N, num_classes=2, size=32)
    idx = open_index(root, verbose=False)
    bad = [2, 11, 19]
    for k, sid in enumerate(bad):
        kind = decodefail.kind_at(k)
        with Image.open(idx.path(sid)) as im:
            pid, label = selfid.decode(np.asarray(im.convert("RGB")))
        with open(idx.path(sid), "wb") as f:
            f.write(decodefail.make(kind, pid, label))
    return root, bad


def _reads(monkeypatch) -> list[int]:
    from vitdata.data.reader import SampleReader

    reads, real = [], SampleReader.read
    monkeypatch.setattr(SampleReader, "read", lambda self, i, *a, **k: reads.append(int(i)) or real(self, i, *a, **k))
    return reads


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_a_fresh_loader_skips_the_files_an_earlier_run_found_bad_before_reading_them(tmp_path, monkeypatch, backend):
    root, bad = _dataset(tmp_path)
    first = create_loader(_cfg(root, backend, on_error="skip"))
    try:
        assert len(first.quarantine) == 0
        for _ in first:
            pass
        assert sorted(e["id"] for e in first.quarantine.state()) == bad
    finally:
        first.close()
    assert os.path.exists(store_path(open_index(root, verbose=False)))
    reads = _reads(monkeypatch)
    again = create_loader(_cfg(root, backend, on_error="skip"))
    try:
        assert sorted(e["id"] for e in again.quarantine.state()) == bad
        ids = [i for b in again for i in b.ids.tolist()]
        assert len(ids) == N and not set(ids) & set(bad)
        assert reads and not set(reads) & set(bad)          # skipped before reading, epoch 0 included
        assert sorted(r["id"] for r in again.skipped(0)) == bad
        assert {r["reason"] for r in again.skipped(0)} == {"decode_error"}
    finally:
        again.close()


def test_an_evaluation_loader_starts_with_the_kept_files_and_names_the_decoders_words(tmp_path, monkeypatch):
    root, bad = _dataset(tmp_path)
    train = create_loader(_cfg(root, "torch", on_error="skip"))
    for _ in train:
        pass
    train.close()
    reads = _reads(monkeypatch)
    ev = create_loader(_cfg(root, "torch"), split="eval")
    try:
        errors, seen = drain(ev)
        assert sorted(e.sample_id for e in errors) == bad
        assert all(e.reason == "decode_error" and "Pillow" in str(e) for e in errors)
        assert sorted(seen) == sorted(set(range(N)) - set(bad)) and not set(reads) & set(bad)
    finally:
        ev.close()


def test_a_kept_entry_no_longer_applies_once_its_file_changes(tmp_path):
    root, bad = _dataset(tmp_path)
    ld = create_loader(_cfg(root, "torch", on_error="skip"))
    for _ in ld:
        pass
    ld.close()
    idx = open_index(root, verbose=False)
    fixed = idx.path(bad[0])
    with open(fixed, "wb") as f:                           # the file is replaced by a good image
        f.write(selfid.encode(selfid.make_image(999, int(idx.label[bad[0]]), 32)))
    ld = create_loader(_cfg(root, "torch", on_error="skip"))
    try:
        assert sorted(e["id"] for e in ld.quarantine.state()) == bad[1:]
        ids = [i for b in ld for i in b.ids.tolist()]
        assert bad[0] in ids
    finally:
        ld.close()
    store = BadFiles(open_index(root, verbose=False))
    assert sorted(e["id"] for e in store.known()) == bad[1:]
    store.add([{"id": 0, "reason": "decode_error", "detail": "x"}])   # the next write drops the stale entry
    with open(store_path(ld.index)) as f:
        assert fixed not in {e["path"] for e in json.load(f)["entries"]}


WRITER = textwrap.dedent("""
    import sys
    from vitdata.data.badfiles import BadFiles
    from vitdata.data.index import open_index
    root, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = BadFiles(open_index(root, verbose=False))
    for sid in range(first, first + n):      # one write per entry: as many races as possible
        store.add([{"id": sid, "reason": "decode_error", "detail": f"writer {first}"}])
""")


@pytest.mark.heavy
def test_concurrent_writers_never_lose_an_entry(tmp_path):
    root = str(tmp_path / "d")
    selfid.write_imagefolder(root, 64, num_classes=2, size=16)
    open_index(root, verbose=False)
    script = tmp_path / "w.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, "-P", str(script), root, str(16 * k), "16"]) for k in range(4)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    known = BadFiles(open_index(root, verbose=False)).known()
    assert sorted(e["id"] for e in known) == list(range(64))
