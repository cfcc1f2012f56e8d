"""A run checkpoint (safetensors parts + a JSON manifest written last) carries a loader state through a
round trip, and a damaged part or manifest, a pickle under a part's name or a newer format is refused
with a StateError naming it, never unpickled (docs/reliability.md D3, D4, D5)."""
import json
import os
import pickle

import numpy as np
import pytest

from vitdata import LoaderConfig, StateError, create_loader
from vitdata.data import selfid
from vitdata.loader.config import AugmentConfig, DistributedConfig
from vitdata.train import checkpoint
from damage import NoPickle as _NoPickle, flips as _flips

# The whole image, unaugmented.
FULL_VIEW = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)


@pytest.fixture(autouse=True)
def _index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "index-cache"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("state") / "train"
    selfid.write_imagefolder(str(root), 96, num_classes=4, size=16)
    return str(root)


def _loader(data, rank, world, batch, backend="torch", **kw):
    kw.setdefault("num_workers", 1 if backend == "dali" else 0)
    return create_loader(LoaderConfig(data=data, batch_size=batch, image_size=16, backend=backend, augment=FULL_VIEW,
                                      distributed=DistributedConfig(rank=rank, world_size=world), **kw))


class _SideEffect:
    def __reduce__(self):
        return (os.system, ("touch /tmp/vitdata-pickle-side-effect",))


def _loader_state(data):
    ld = _loader(data, 0, 1, 8)
    it = iter(ld)
    next(it)
    state = ld.state_dict()
    ld.close()
    return state


def test_a_loader_state_in_a_checkpoint_round_trips_and_damaged_parts_are_refused(data, tmp_path):
    """docs/reliability.md D3 (corruption), D4 (pickle-free)."""
    state = _loader_state(data)
    d = str(tmp_path / "ck")
    checkpoint.save(d, {"loader": state}, step=1)
    with _NoPickle():
        back = checkpoint.load(d)["loader"]
        ld = _loader(data, 0, 1, 8)
        ld.load_state_dict(back)
        ld.close()
    rng = np.random.default_rng(5)
    parts = [n for n in os.listdir(d) if n != checkpoint.MANIFEST]
    refused = 0
    for name in parts:
        p = os.path.join(d, name)
        good = open(p, "rb").read()
        cases = _flips(good, 100, rng) + [good[:int(rng.integers(0, len(good)))] for _ in range(30)]
        for bad in cases:
            open(p, "wb").write(bad)
            with _NoPickle(), pytest.raises(StateError, match=name):
                checkpoint.load(d)
            refused += 1
        open(p, "wb").write(good)
    print(f"\nD3 checkpoint parts: {refused}/{refused} damaged parts refused, naming the part")
    # D4a: a pickle with a side effect saved under a checkpoint part's name is refused, never executed.
    marker = "/tmp/vitdata-pickle-side-effect"
    if os.path.exists(marker):
        os.unlink(marker)
    for name in parts:
        open(os.path.join(d, name), "wb").write(pickle.dumps(_SideEffect()))
    with _NoPickle(), pytest.raises(StateError):
        checkpoint.load(d)
    assert not os.path.exists(marker)


def test_a_damaged_checkpoint_manifest_is_always_refused(data, tmp_path):
    """docs/reliability.md D3 (corruption)."""
    d = str(tmp_path / "ck")
    checkpoint.save(d, {"loader": _loader_state(data)}, step=1)
    mpath = os.path.join(d, checkpoint.MANIFEST)
    good = open(mpath, "rb").read()
    rng = np.random.default_rng(9)
    accepted = []
    for bad in _flips(good, 300, rng) + [good[:int(rng.integers(0, len(good)))] for _ in range(50)]:
        open(mpath, "wb").write(bad)
        try:
            with _NoPickle():
                checkpoint.load(d)
            accepted.append(bad)
        except StateError:
            pass
    print(f"\nD3 manifest: {350 - len(accepted)}/350 damaged manifests refused with StateError")
    assert not accepted


def test_a_checkpoint_from_a_newer_vitdata_says_so(data, tmp_path):
    """docs/reliability.md D5 (versioning)."""
    d = str(tmp_path / "ck")
    checkpoint.save(d, {"loader": _loader_state(data)}, step=1)
    mpath = os.path.join(d, checkpoint.MANIFEST)
    m = json.loads(open(mpath).read())
    m["format"] = 2
    open(mpath, "w").write(json.dumps(m))
    with pytest.raises(StateError, match=r"written by a newer vitdata \(format 2\)"):
        checkpoint.load(d)
