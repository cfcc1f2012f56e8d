"""A file whose header passes every check but whose coded data fails in the
decoder (a PNG with a corrupt zlib stream or row filters under valid CRCs) is quarantined and substituted, never an epoch (docs/reliability.md I1, I2, I3)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitdata import DataError, LoaderConfig, create_loader
from vitdata.data import selfid

from . import decodefail
from .conftest import FULL_VIEW

MEAN = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1) * 255
STD = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1) * 255
N, B = 32, 4
WORDS = {"dali": {"png_bad_zlib": "libpng error: IDAT: invalid distance too far back",
                  "png_bad_filter": "libpng error: bad adaptive filter value"},
         "torch": dict.fromkeys(decodefail.KINDS, "Pillow: OSError")}


def _cfg(root, backend, **kw):
    kw.setdefault("num_workers", 0)
    kw.setdefault("augment", FULL_VIEW)
    kw.setdefault("check_png_data", False)   # the decodefail files then reach the decoder (decodefail.py)
    return LoaderConfig(data=root, batch_size=B, image_size=32, backend=backend, num_threads=1, seed=3, **kw)


def _write_bad(root: str, index, sample_ids) -> dict[int, str]:
    """Overwrite the files of ``sample_ids`` (index positions) with the decoder-failing kinds, in turn."""
    out = {}
    for k, sid in enumerate(sample_ids):
        kind = decodefail.kind_at(k)
        path = index.path(sid)
        with Image.open(path) as im:
            pid, label = selfid.decode(np.asarray(im.convert("RGB")))
        with open(path, "wb") as f:
            f.write(decodefail.make(kind, pid, label))
        out[sid] = kind
    return out


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    """32 images; the ids at positions 0 (start), 13 (middle) and 31 (end) of epoch 0's order fail in the
    decoder, the kinds in turn. Returns (root, {id: kind}, epoch-0 order)."""
    root = str(tmp_path_factory.mktemp("quar") / "train")
    selfid.write_imagefolder(root, N, num_classes=2, size=32)
    os.environ.setdefault("VITDATA_CACHE", str(tmp_path_factory.mktemp("cache")))
    probe = create_loader(_cfg(root, "torch"))
    order = probe.sampler.epoch_ids(0).reshape(-1).tolist()
    bad = _write_bad(root, probe.index, [order[0], order[13], order[31]])
    probe.close()
    return root, bad, order


def _pixel_ids(batch) -> list[int]:
    x = batch.images.float().numpy() * STD + MEAN
    return [selfid.decode(img, chw=True)[0] for img in x]


def _next_usable(order, pos, bad):
    return next(order[(pos + k) % len(order)] for k in range(1, len(order)) if order[(pos + k) % len(order)] not in bad)


@pytest.mark.parametrize("backend", ["dali", "torch"])
@pytest.mark.parametrize("prefetch,workers", [(1, 0), (4, 2)])
def test_decoder_failures_at_start_middle_and_end_are_quarantined_and_substituted(train_data, backend, prefetch,
                                                                                  workers):
    """I1: the epoch completes; each file is listed once as decode_error, substituted by the next usable id
    of the order, quarantined with the decoder's words; the next epoch skips it the same way."""
    root, bad, order = train_data
    ld = create_loader(_cfg(root, backend, prefetch=prefetch, num_workers=workers, on_error="skip"))
    try:
        index_to_pixel = {}
        for epoch in range(2):
            ld.set_epoch(epoch)
            ids = []
            for b in ld:
                ids += b.ids.tolist()
                if epoch == 0:
                    index_to_pixel.update(zip(b.ids.tolist(), _pixel_ids(b)))
            assert len(ids) == N and not set(ids) & set(bad)
            rep = ld.skipped(epoch)
            assert sorted(r["id"] for r in rep) == sorted(bad)
            assert {r["reason"] for r in rep} == {"decode_error"}
            eorder = ld.sampler.epoch_ids(epoch).reshape(-1).tolist()
            for r in rep:
                assert r["substitute"] == _next_usable(eorder, eorder.index(r["id"]), bad)
        # every delivered image is the sample its id names (the replay delivered real pixels)
        assert len(set(index_to_pixel.values())) == len(index_to_pixel)
        q = {e["id"]: e for e in ld.quarantine.state()}
        assert sorted(q) == sorted(bad)
        for sid, kind in bad.items():
            assert q[sid]["path"].endswith(os.path.basename(ld.index.path(sid)))
            assert WORDS[backend][kind] in q[sid]["detail"]
    finally:
        ld.close()


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_a_quarantined_id_is_not_read_again(train_data, backend, monkeypatch):
    """I1: later epochs skip a quarantined id before reading it."""
    from vitdata.data.reader import SampleReader

    root, bad, _ = train_data
    ld = create_loader(_cfg(root, backend, on_error="skip"))
    try:
        for _ in ld:
            pass
        reads = []
        real = SampleReader.read
        monkeypatch.setattr(SampleReader, "read",
                            lambda self, i, *a, **k: reads.append(int(i)) or real(self, i, *a, **k))
        ld.set_epoch(1)
        assert sum(len(b.ids) for b in ld) == N
        assert reads and not set(reads) & set(bad)
    finally:
        ld.close()


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_resume_after_a_quarantine_equals_the_uninterrupted_run(train_data, backend):
    """I3: a state taken after a quarantine resumes with the same substitutions (and, on CPU, pixels)."""
    root, bad, _ = train_data
    cfg = _cfg(root, backend, on_error="skip", augment=FULL_VIEW.__class__(randaug=True, hflip=0.5))
    ref = create_loader(cfg)
    full = []
    state = None
    for epoch in range(2):
        ref.set_epoch(epoch)
        for k, b in enumerate(ref):
            full.append((epoch, b.ids.tolist(), b.images.clone()))
            if epoch == 0 and k == 4:   # after the start's and the middle's failures (step 3)
                state = json.loads(json.dumps(ref.state_dict()))
    ref.close()
    assert len(state["quarantine"]) == 2
    res = create_loader(cfg)
    try:
        res.load_state_dict(state)
        got = []
        for epoch in range(2):
            res.set_epoch(epoch)
            got += [(epoch, b.ids.tolist(), b.images) for b in res]
        tail = full[5:]
        assert [(e, i) for e, i, _ in got] == [(e, i) for e, i, _ in tail]
        for (_, _, a), (_, _, b) in zip(got, tail):
            assert torch_equal(a, b)
        assert sorted(e["id"] for e in res.quarantine.state()) == sorted(bad)
    finally:
        res.close()


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    """16 good files and 5 bad ones: 2 refused by the header checks (HTML, GIF), 3 by the decoder."""
    import badinputs

    root = str(tmp_path_factory.mktemp("quar-eval") / "val")
    selfid.write_imagefolder(root, 21, num_classes=3, size=32)
    os.environ.setdefault("VITDATA_CACHE", str(tmp_path_factory.mktemp("cache")))
    probe = create_loader(_cfg(root, "torch"), split="eval")
    idx = probe.index
    probe.close()
    bad = _write_bad(root, idx, [1, 9, 20])
    for sid, kind in ((5, 4), (14, 15)):
        with open(idx.path(sid), "wb") as f:
            f.write(badinputs.make_bytes(kind))
        bad[sid] = kind
    return root, bad


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_eval_with_raise_reports_every_bad_file_once_and_evaluates_every_good_file_once(eval_data, backend):
    """I2 (items 2, 12): iterating on after each DataError reports each bad file once, naming that one file
    and the decoder's own words, and evaluates each good file once."""
    root, bad = eval_data
    ld = create_loader(_cfg(root, backend, on_error="raise"), split="eval")
    errors, seen = [], []
    try:
        for _ in range(50):
            try:
                for b in ld:
                    seen += b.ids.tolist()
                    assert _pixel_ids(b) == [int(os.path.basename(ld.index.path(i))[4:10]) for i in b.ids.tolist()]
                break
            except DataError as e:
                errors.append(e)
        else:
            pytest.fail("the eval loop did not end")
        assert sorted(e.sample_id for e in errors) == sorted(bad)
        for e in errors:
            assert e.path == ld.index.describe(e.sample_id)
            if isinstance(bad[e.sample_id], str):
                assert e.reason == "decode_error"
                assert WORDS[backend][bad[e.sample_id]] in str(e)
        assert sorted(seen) == sorted(set(range(21)) - set(bad))
    finally:
        ld.close()


WORKER = Path(__file__).with_name("quarantine_worker.py")


@pytest.mark.heavy
@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_two_gloo_ranks_complete_the_epoch_with_the_same_steps(train_data, tmp_path, backend):
    """I3: a rank that quarantines keeps the step count of the one that does not."""
    root, bad, _ = train_data
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-P", str(WORKER), str(r), "2", str(tmp_path / "init"), root,
                               str(tmp_path / f"r{r}.json"), backend], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    logs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    res = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    for epoch in range(2):
        assert res[0]["steps"][epoch] == res[1]["steps"][epoch] == N // (2 * B)
        assert not set(res[0]["ids"][epoch] + res[1]["ids"][epoch]) & set(bad)
        assert sorted(i for r in res for i in r["skipped"][epoch]) == sorted(bad)
    # rank-local: a rank quarantines what it met itself (a file met by both ranks, by both)
    assert sorted({i for r in res for i in r["quarantine"]}) == sorted(bad)
