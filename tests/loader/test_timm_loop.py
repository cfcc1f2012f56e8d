"""A loop shaped like timm's train.py with the Task API and the README's drop-in lines, on 2 gloo ranks: loaders
from ``vitdata.timm_factories``, the oracle (a timm --config key) fed through ``task.criterion``, the loader state
inside rank 0's checkpoint, and a resume at the checkpoint's epoch + 1 equal to the uninterrupted run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("timm_loop_worker.py")


def run_ranks(tmp_path, data, mode, ckpt):
    env = dict(os.environ, PYTHONPATH=str(WORKER.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    init = tmp_path / f"init-{mode}"
    outs = [tmp_path / f"{mode}-r{r}.json" for r in range(2)]
    root = os.path.dirname(data)                          # holds train/: timm's --data-dir and --train-split
    procs = [subprocess.Popen([sys.executable, "-P", str(WORKER), str(r), "2", str(init), root, str(outs[r]),
                               str(ckpt), mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(2)]
    logs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [json.loads(o.read_text()) for o in outs]


@pytest.mark.heavy
def test_a_timm_shaped_loop_saving_on_rank_0_only_resumes_like_the_uninterrupted_run(tiny_data, tmp_path):
    full_ck, ck = tmp_path / "full", tmp_path / "ck"
    full_ck.mkdir()
    ck.mkdir()
    full = run_ranks(tmp_path, tiny_data, "full", full_ck)
    run_ranks(tmp_path, tiny_data, "first", ck)          # epochs 0 and 1, then the run stops
    assert sorted(os.listdir(ck)) == ["last.pth.tar"]                  # the loader state is inside it
    resumed = run_ranks(tmp_path, tiny_data, "resume", ck)
    for r in range(2):
        assert list(resumed[r]["train"]) == ["2"]
        assert resumed[r]["train"]["2"] == full[r]["train"]["2"]         # same ids (the plan came back)
        assert resumed[r]["eval"]["2"] == full[r]["eval"]["2"]
        assert resumed[r]["weights"] == full[r]["weights"]
        assert resumed[r]["table"] == full[r]["table"]                    # the oracle table too
        assert resumed[r]["len_dataset"] == 64
    steps = [full[0]["train"][str(e)]["steps"] for e in range(3)]
    assert steps[0] == 8 and min(steps[1:]) < 8                          # prune-easy shortened later epochs
    a, b = full[0]["train"]["1"]["ids"], full[1]["train"]["1"]["ids"]
    assert not set(a) & set(b)
