"""Two CPU processes with gloo: each rank gets a disjoint part of every epoch and the same number of steps."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Two gloo ranks in child processes: deselected by `make test-quick`.
pytestmark = pytest.mark.heavy

WORKER = Path(__file__).with_name("dist_worker.py")


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_two_gloo_ranks_read_disjoint_parts_that_cover_the_epoch(tiny_data, tmp_path, backend):
    env = dict(os.environ, PYTHONPATH=str(WORKER.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    init = tmp_path / "init"
    procs = [subprocess.Popen([sys.executable, "-P", str(WORKER), str(r), "2", str(init), tiny_data,
                               str(tmp_path / f"r{r}.json"), backend], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    logs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    res = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in res] == [0, 1]
    assert res[0]["len"] == res[1]["len"] == 8           # 64 ids / (2 ranks x batch 4)
    for epoch in range(2):
        a, b = res[0]["train"][epoch], res[1]["train"][epoch]
        assert len(a) == len(b) == 32
        assert not set(a) & set(b) and sorted(a + b) == list(range(64))
    assert res[0]["train"][0] != res[0]["train"][1]       # reshuffled per epoch
    ea, eb = res[0]["eval"], res[1]["eval"]
    assert not set(ea) & set(eb) and sorted(ea + eb) == list(range(64))
