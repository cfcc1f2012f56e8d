"""Loaders on 2 gloo ranks (child processes): the ranks agree on the oracle's table and plan after every
epoch and deliver exactly the planned ids (docs/reliability.md C3, H1); a rank that fails, with a data
error or a read that hangs, makes the other ranks exit within the collective timeout, not hang (G5).

Figures are printed; run with ``pytest -s`` to see them."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vitdata.data import selfid
from vitdata.data.sampler import EpochPlan, Sampler
import badinputs

# Gloo ranks in child processes: deselected by `make test-quick`.
pytestmark = pytest.mark.heavy

RANK_WORKER = Path(__file__).with_name("loader_rank_worker.py")
WORKER = Path(__file__).with_name("rss_and_hang_worker.py")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix") / "train"
    selfid.write_imagefolder(str(root), 96, num_classes=4, size=16)
    return str(root)


def _spawn(mode, world, tmp_path, data_for_rank):
    init = tmp_path / "rendezvous"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for r in range(world):
        procs.append(subprocess.Popen(
            [sys.executable, "-P", str(RANK_WORKER), mode, str(r), str(world), str(init), data_for_rank(r),
             str(tmp_path / f"rank{r}.out")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _reap(procs):
    for p in procs:           # only the processes this test started, by their own handles
        if p.poll() is None:
            p.kill()
            p.wait(10)


# -- C3 + H1 --------------------------------------------------------------------------------------


def test_two_gloo_ranks_agree_on_table_and_plan_each_epoch_and_deliver_exactly_the_planned_ids(data, tmp_path):
    """docs/reliability.md C3 (oracle rank agreement), H1 (exactly-once)."""
    t = time.perf_counter()
    procs = _spawn("oracle", 2, tmp_path, lambda r: data)
    try:
        for p in procs:
            out, _ = p.communicate(timeout=150)
            assert p.returncode == 0, out[-4000:]
    finally:
        _reap(procs)
    ranks = [json.loads((tmp_path / f"rank{r}.out").read_text()) for r in range(2)]
    # C3: after each epoch the table digest and the committed plan's digest are equal on both ranks.
    t0, t1 = ranks[0]["final"]["tables"], ranks[1]["final"]["tables"]
    assert len(t0) == 3 and t0 == t1
    assert ranks[0]["all_final"] == ranks[1]["all_final"]
    for e in range(1, 3):
        assert ranks[0]["epochs"][e]["plan_digest"] == ranks[1]["epochs"][e]["plan_digest"] is not None
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    # H1: each rank's ids equal the planned list recomputed from (seed, epoch, committed plan).
    n = 96
    dup_counts = []
    for e in range(3):
        pf = ranks[0]["epochs"][e]["plan_file"]
        plan = None if pf is None else EpochPlan.load(pf)
        if pf is not None:
            assert plan.digest() == ranks[0]["epochs"][e]["plan_digest"]
        g = None
        for r in range(2):
            s = Sampler(n, 8, seed=7, rank=r, world_size=2)
            s.set_plan(plan)
            g = s.global_epoch_ids(e)
            assert np.array_equal(np.asarray(ranks[r]["epochs"][e]["ids"]), g[:, r * 8:(r + 1) * 8]), (e, r)
        union = np.concatenate([np.asarray(ranks[r]["epochs"][e]["ids"]).ravel() for r in range(2)])
        assert sorted(union.tolist()) == sorted(g.ravel().tolist())            # union == plan (multiset)
        got = np.bincount(union, minlength=n)
        want = np.bincount(g.ravel(), minlength=n)
        assert (got <= want).all()                                             # no duplicates beyond the plan's
        dup_counts.append(int((want > 1).sum()))
        if plan is None:
            assert (want <= 1).all()
    print(f"\nC3/H1: 2 gloo ranks, 3 epochs, table digests equal after each epoch {[d[:8] for d in t0]}; "
          f"ids == recomputed plan on both ranks; ids drawn more than once by the plan per epoch: {dup_counts}; "
          f"{time.perf_counter() - t:.1f} s")


# -- G5 -------------------------------------------------------------------------------------------


def test_a_data_error_on_rank_1_exits_it_with_the_error_and_rank_0_does_not_hang(data, tmp_path_factory, tmp_path):
    """docs/reliability.md G5 (DDP failure propagation)."""
    root = tmp_path_factory.mktemp("g5")
    m = badinputs.write_imagefolder_mixed(str(root / "train"), 88, kinds=[1, 2, 3, 4, 5, 7, 8, 15], size=16)
    t = time.perf_counter()
    procs = _spawn("g5", 2, tmp_path, lambda r: data if r == 0 else m.root)
    try:
        out1, _ = procs[1].communicate(timeout=120)
        t1 = time.perf_counter()
        try:
            out0, _ = procs[0].communicate(timeout=10 + 10 + 5)
        except subprocess.TimeoutExpired:
            procs[0].kill()
            out0, _ = procs[0].communicate()
            pytest.fail(f"rank 0 still running {time.perf_counter() - t1:.1f} s after rank 1 exited:\n{out0[-2000:]}")
        t0 = time.perf_counter()
    finally:
        _reap(procs)
    assert procs[1].returncode != 0 and "DataError" in out1, out1[-3000:]
    assert procs[0].returncode != 0, out0[-3000:]
    last = [ln for ln in out0.strip().splitlines() if ln.strip()][-1:]
    print(f"\nG5: rank 1 exit {procs[1].returncode} after {t1 - t:.1f} s with: "
          f"{[ln for ln in out1.splitlines() if 'DataError' in ln][-1][:160]}\n"
          f"    rank 0 exit {procs[0].returncode} {t0 - t1:.1f} s later: {last[0][:200] if last else ''}")
    assert t0 - t1 < 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_whose_read_hangs_makes_the_waiting_rank_fail_within_the_collective_timeout(tmp_path_factory,
                                                                                           tmp_path):
    """docs/reliability.md G5 (DDP failure propagation).

    2 gloo ranks set up by ``vitdata.train.setup_distributed`` with ``dist_timeout=10``; rank 1's read of
    its 4th step blocks for good (a blocking open of a FIFO nobody writes), so it never reaches that step's
    all-reduce. Rank 0 must exit with the process group's timeout error within 10 + 10 s of the stall,
    not hang. Rank 1 stays blocked (nothing can interrupt a hung read) and is killed by the test."""
    root = tmp_path_factory.mktemp("g5hang") / "train"
    selfid.write_imagefolder(str(root), 64, num_classes=4, size=16)
    fifo = tmp_path / "stalled-read"
    os.mkfifo(fifo)
    port = _free_port()
    logs = [tmp_path / f"rank{r}.log" for r in range(2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-P", str(WORKER), "g5hang", str(r), "2", str(port), str(root),
                               str(fifo), str(logs[r])], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for r in range(2)]
    try:
        try:
            out0, _ = procs[0].communicate(timeout=120)
        except subprocess.TimeoutExpired:
            procs[0].kill()
            out0, _ = procs[0].communicate()
            pytest.fail(f"rank 0 still waiting after 120 s:\n{out0[-2000:]}")
        t_exit = time.time()
        assert procs[1].poll() is None, "rank 1 was meant to hang in its read"
    finally:
        for p in procs:                       # only the processes this test started, by their own handles
            if p.poll() is None:
                p.kill()
                p.wait(10)
    log0, log1 = logs[0].read_text().splitlines(), logs[1].read_text().splitlines()
    stall = float(next(ln for ln in log1 if ln.startswith("stall")).split()[1])
    err = next(ln for ln in log0 if ln.startswith("error"))
    steps0 = sum(ln.startswith("step") for ln in log0)
    print(f"\nG5 hanging rank: rank 1 stalled after {sum(ln.startswith('step') for ln in log1)} steps; rank 0 did "
          f"{steps0} steps and exited (code {procs[0].returncode}) {t_exit - stall:.1f} s after the stall with: "
          f"{err.split(': ', 1)[1][:200]}")
    assert procs[0].returncode != 0 and steps0 == 3
    assert "timed out" in err.lower() or "timeout" in err.lower()
    assert t_exit - stall <= 10 + 10
