"""The time-to-accuracy benchmark runs end to end at tiny settings: two recipes, one epoch, a split of tiny
shards; its record holds the measured times, compute and accuracies of each recipe."""
import json
import os

import pytest

from vitdata import bench
from vitdata.bench.record import read_record
from vitdata.bench import time_to_accuracy as t2a
from vitdata.bench.splits import split_shards


def test_the_split_is_fixed_by_its_seed_disjoint_and_written_once(tiny_shards):
    from vitdata.data.index import open_index
    train, val = split_shards(str(tiny_shards), val_size=8, seed=3)
    keys = lambda d: {open_index(d).key(i) for i in range(len(open_index(d)))}  # noqa: E731
    assert len(keys(train)) == 16 and len(keys(val)) == 8 and not keys(train) & keys(val)
    assert keys(train) | keys(val) == keys(str(tiny_shards))
    assert split_shards(str(tiny_shards), val_size=8, seed=3) == (train, val)
    assert keys(split_shards(str(tiny_shards), val_size=8, seed=4)[1]) != keys(val)
    small, _ = split_shards(str(tiny_shards), val_size=8, seed=3, train_size=10)
    assert keys(small) <= keys(train) and len(keys(small)) == 10


def test_two_recipes_run_end_to_end_and_the_record_holds_measured_times(tiny_shards, tmp_path):
    path = tmp_path / "t2a.json"
    # The folder of an interrupted attempt at the baseline: its evaluation must not reach the record.
    (tmp_path / "runs" / "baseline").mkdir(parents=True)
    (tmp_path / "runs" / "baseline" / "log.jsonl").write_text(json.dumps(
        {"kind": "eval", "epoch": 1, "step": 2, "time": 1.0, "top1": 99.0, "top5": 99.0, "loss": 0.1}) + "\n")
    rc = bench.main(["t2a", "--train", str(tiny_shards), "--val-size", "8", "--recipes", "pss,baseline",
                     "--epochs", "1", "--batch-size", "8", "--depth", "1", "--image-size", "16",
                     "--patch-size", "4", "--workers", "0", "--out", str(tmp_path / "runs"), "--json", str(path),
                     "--test", str(tiny_shards), "--quiet", "--extra", "--backend torch"])
    assert rc == 0
    rec = read_record(str(path))
    assert rec["what"] == "time-to-accuracy" and rec["settings"]["recipes"] == ["baseline", "pss"]
    runs = {r["recipe"]: r for r in rec["runs"]}
    for r in runs.values():
        assert r["returncode"] == 0 and r["wall_s"] > 0 and r["train_s"] > 0 and r["cpu_s"] > 0
        assert len(r["loadavg_before"]) == 3 and r["images"] == 16 and r["images_per_s"] > 0
        assert [e["epoch"] for e in r["evals"]] == [1] and 0 <= r["final_top1"] <= 100
        assert 0 <= r["test_top1"] <= 100
        assert r["token_blocks"] == 2 * 8 * 17 * 1 or r["recipe"] == "pss"
        assert r["flops"] > 0 and set(r["reached"]) >= {"epoch", "time_s", "time_ratio", "target_top1"}
    assert runs["pss"]["token_blocks"] < runs["baseline"]["token_blocks"]         # PSS drops tokens
    assert runs["pss"]["wall_s"] != runs["baseline"]["wall_s"]
    assert runs["pss"]["train_s"] != runs["baseline"]["train_s"]
    assert runs["baseline"]["reached"]["epoch"] == 1                               # its own final top-1
    assert runs["baseline"]["reached"]["time_ratio"] == pytest.approx(
        runs["baseline"]["evals"][-1]["time_s"] / runs["baseline"]["train_s"])
    assert [h["measured"].split(":")[0].split(" (")[0] for h in rec["headline"]] == ["baseline", "pss"]
    if rec["plot"]:
        assert os.path.exists(rec["plot"])


def test_runs_are_recipes_with_their_own_flags_and_the_baseline_is_the_mean_of_its_seeds():
    runs = t2a.parse_runs("1gpu24h:--no-locality, baseline:--seed 1,baseline,baseline:--locality")
    assert [r["name"] for r in runs] == ["baseline --seed 1", "baseline", "1gpu24h --no-locality",
                                         "baseline --locality"]
    assert [t2a.is_baseline(r) for r in runs] == [True, True, False, False]
    assert runs[2]["recipe"] == "1gpu24h" and runs[2]["flags"] == ["--no-locality"]
    fake = [dict(r, returncode=0, train_s=100.0 * (i + 1), wall_s=1.0, cpu_s=1.0, flops=1.0, final_top1=top,
                 evals=[{"epoch": 1, "time_s": 50.0, "top1": top}])
            for i, (r, top) in enumerate(zip(runs, [60.0, 61.0, 59.0, 70.0]))]
    base = t2a.baseline_of(fake)
    assert base["final_top1"] == 60.5 and base["spread"] == 1.0 and base["train_s"] == 150.0
    t2a.compare(fake, 0.3)
    assert fake[3]["reached"]["epoch"] == 1 and fake[3]["reached"]["time_ratio"] == pytest.approx(50 / 150)
    assert fake[2]["reached"]["epoch"] is None                   # 59 is short of 60.5 - 0.3


def test_a_second_sitting_keeps_the_finished_runs_of_the_same_settings(tmp_path):
    common = ["--epochs", "1"]
    done = {"name": "baseline", "recipe": "baseline", "returncode": 0}
    (tmp_path / "runs.partial.json").write_text(json.dumps({"common": common, "runs": [done, dict(
        done, name="pss", recipe="pss", returncode=1)]}))
    assert set(t2a.kept_runs(str(tmp_path / "runs.partial.json"), common)) == {"baseline"}   # failed: rerun
    assert t2a.kept_runs(str(tmp_path / "runs.partial.json"), ["--epochs", "2"]) == {}        # other settings


def test_the_partial_file_keeps_an_earlier_sittings_runs_that_this_sitting_has_not_reached():
    kept = {n: {"name": n, "recipe": n.split()[0], "returncode": 0} for n in ("baseline", "1gpu24h", "efficienttrain")}
    new = {"name": "baseline --seed 1", "recipe": "baseline", "flags": ["--seed", "1"], "returncode": 0}
    # this sitting: the kept baseline, then a new run; 1gpu24h and efficienttrain come later or not at all
    names = [r["name"] for r in t2a.partial_runs([kept["baseline"], new], kept)]
    assert names == ["baseline", "baseline --seed 1", "1gpu24h", "efficienttrain"]
