"""docs/reliability.md B1/B2/B3: kill -9 at chosen points, chained resumes; the resumed tail of (id, augmentation
magnitude, image digest) equals the uninterrupted run's. DALI CPU backend, 64 tiny samples, 2 epochs."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vitdata import LoaderConfig, create_loader
from vitdata.data import selfid
from vitdata.loader.config import AugmentConfig

# Children killed with SIGKILL and resumed: deselected by `make test-quick`.
pytestmark = pytest.mark.heavy

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume") / "train"
    selfid.write_imagefolder(str(root), 64, num_classes=4, size=32)
    return str(root)


class _Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def _run(data, state, log, die_at, backend="dali", env=None):
    err = log + ".stderr"
    with open(err, "w") as ef:
        p = subprocess.run([sys.executable, "-P", WORKER, data, state, log, die_at, backend], env=env,
                           stdout=subprocess.DEVNULL, stderr=ef, timeout=120)
    orphans = _reap(log)
    with open(err) as f:
        return _Result(p.returncode, f.read() + (f"\n{orphans} orphaned DALI workers reaped" if orphans else ""))


def _reap(log) -> int:
    """SIGKILL the DALI source workers the killed child left behind (their pids, written by the child)."""
    import psutil

    n = 0
    if os.path.exists(log + ".pids"):
        with open(log + ".pids") as f:
            for pid in {int(x) for x in f.read().split()}:
                try:
                    psutil.Process(pid).kill()
                    n += 1
                except psutil.Error:
                    pass
        os.unlink(log + ".pids")
    return n


def _read(log):
    out = {}
    with open(log) as f:
        for line in f:
            e, s, ids, mag, digest = json.loads(line)
            if (e, s) in out:     # a step replayed after a kill between its log line and its state save
                assert out[(e, s)] == (ids, mag, digest), f"replayed step {(e, s)} differs"
            out[(e, s)] = (ids, mag, digest)
    return out


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    env = dict(os.environ, VITDATA_CACHE=str(d / "cache"))
    r = _run(data, str(d / "state.json"), str(d / "log"), "none", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return _read(str(d / "log"))


@pytest.mark.parametrize("kills", [
    ["0:0", "0:3", "0:6", "0:7"],                      # B2: chained: first step, mid, last-1, last (epoch end)
    ["1:0"],                                           # B1: first step of the second epoch
    pytest.param(["0:boundary"], marks=pytest.mark.slow),  # set_epoch(E+1) done, no batch of it yet
])
def test_kill_9_and_chained_resumes_replay_the_uninterrupted_tail(data, reference, tmp_path, kills):
    """docs/reliability.md B1 (kill -9 and resume), B2 (chained resumes)."""
    env = dict(os.environ, VITDATA_CACHE=str(tmp_path / "cache"))
    state, log = str(tmp_path / "state.json"), str(tmp_path / "log")
    t = time.perf_counter()
    for k in kills:
        r = _run(data, state, log, k, env=env)
        assert r.returncode == -signal.SIGKILL, (k, r.stderr[-2000:])
    r = _run(data, state, log, "none", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    got = _read(log)
    print(f"\nB1/B2 kills at {kills}: {len(got)} steps, {len(kills) + 1} processes, {time.perf_counter() - t:.1f} s")
    assert sorted(got) == sorted(reference)
    for key in reference:
        assert got[key] == reference[key], f"epoch/step {key} differs after resume"
    ids = [i for (e, s), v in sorted(got.items()) if e == 0 for i in v[0]]
    assert sorted(ids) == list(range(64))             # pre ∪ post: each id once, none missing


@pytest.mark.slow
def test_an_outside_sigkill_at_a_random_moment_resumes_exactly(data, reference, tmp_path):
    """docs/reliability.md B1 (kill -9 and resume)."""
    env = dict(os.environ, VITDATA_CACHE=str(tmp_path / "cache"))
    state, log = str(tmp_path / "state.json"), str(tmp_path / "log")
    p = subprocess.Popen([sys.executable, "-P", WORKER, data, state, log, "none"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not os.path.exists(log) or sum(1 for _ in open(log)) < 5):
        time.sleep(0.01)
    import psutil

    kids = psutil.Process(p.pid).children(recursive=True)
    p.send_signal(signal.SIGKILL)
    p.wait()
    for c in kids:       # the DALI workers of the killed process (started by this test)
        try:
            c.kill()
        except psutil.Error:
            pass
    r = _run(data, state, log, "none", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    got = _read(log)
    assert got == reference


def test_the_state_counts_consumed_batches_not_prefetched_ones(data):
    """docs/reliability.md B3 (consumed, not prefetched, batches)."""
    tails = []
    for prefetch in (1, 4):
        cfg = LoaderConfig(data=data, batch_size=8, image_size=24, backend="dali", num_workers=2, prefetch=prefetch,
                           augment=AugmentConfig(randaug=False))
        a = create_loader(cfg)
        it = iter(a)
        for _ in range(3):
            next(it)
        state = a.state_dict()
        a.close()
        b = create_loader(cfg)
        b.load_state_dict(state)
        tails.append([(x.ids.clone(), x.images.clone()) for x in b])
        b.close()
    assert len(tails[0]) == len(tails[1]) == 5
    for (i1, x1), (i2, x2) in zip(*tails):
        assert torch.equal(i1, i2) and torch.equal(x1, x2)
