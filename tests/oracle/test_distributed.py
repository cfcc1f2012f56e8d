"""Two CPU processes under gloo report different losses; both hold the same table and plan after every
epoch (docs/reliability.md C3), equal to one process fed the same reports in (step, rank) order, and their next
epoch's shards are disjoint parts of the same global order."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vitdata.oracle.difficulty import DifficultyOracle
from vitdata.data.sampler import Sampler

# Two gloo ranks in child processes: deselected by `make test-quick`.
pytestmark = pytest.mark.heavy

WORKER = Path(__file__).with_name("gloo_worker.py")


def load_worker():
    spec = importlib.util.spec_from_file_location("oracle_gloo_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_gloo_ranks_hold_identical_tables_plans_and_disjoint_shards(tmp_path):
    w = load_worker()
    init = f"file://{tmp_path / 'rendezvous'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-P", str(WORKER), "--rank", str(r), "--init", init,
                               "--out", str(tmp_path / f"rank{r}.json")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(w.WORLD)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(w.WORLD)]

    # Reference: one process, the same reports in the canonical (step, rank, position) order.
    ref = DifficultyOracle(w.N, w.POLICY, device="cpu", seed=1, **w.POLICY_KW)
    sampler = Sampler(w.N, w.BATCH * w.WORLD, seed=1)
    for epoch in range(w.EPOCHS):
        sampler.set_plan(ref.plan)
        for step, row in enumerate(sampler.epoch_ids(epoch)):
            for r in range(w.WORLD):
                ref.report(*w.batch_for(row, r, epoch, step))
                ref.mark_skipped(w.skipped_for(row, r, epoch, step))
        ref.end_epoch(epoch)
        r0, r1 = ranks[0][epoch], ranks[1][epoch]
        assert r0["table"] == r1["table"] == ref.table_digest(), f"epoch {epoch}"
        assert r0["plan"] == r1["plan"] == ref.plan.digest()
        assert r0["metrics"] == r1["metrics"] == ref.last_metrics
        g = np.asarray(r0["next_global"])
        assert np.array_equal(g, np.asarray(r1["next_global"]))
        assert np.array_equal(np.asarray(r0["next_ids"]), g[:, :w.BATCH])
        assert np.array_equal(np.asarray(r1["next_ids"]), g[:, w.BATCH:])
    assert ranks[0][1]["metrics"]["n_ignored"] == 1          # rank 1's skipped id never reached the table
    assert ranks[0][1]["metrics"]["n_skipped"] == 1          # ... but its skip flag reached both ranks
    assert ranks[0][0]["metrics"]["n_reports"] == w.N        # both ranks' reports were folded
