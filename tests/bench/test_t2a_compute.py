"""The time-to-accuracy benchmark's compute estimate counts the steps a run really took."""
import pytest

from vitdata.bench import time_to_accuracy as t2a

ARGV = ["--recipe", "baseline", "--epochs", "3", "--batch-size", "10", "--depth", "2", "--image-size", "32",
        "--patch-size", "8", "--synthetic-samples", "100"]


def test_a_shortened_epoch_counts_only_its_steps():
    full = t2a.estimate_compute(ARGV, num_train=100)
    assert full["steps"] == 30 and full["token_blocks"] == 30 * 10 * 17 * 2   # 16 patches + class token, 2 blocks
    pruned = t2a.estimate_compute(ARGV, num_train=100, steps_per_epoch=[10, 6, 10])
    assert pruned["steps"] == 26 and pruned["token_blocks"] == pytest.approx(full["token_blocks"] * 26 / 30)
    assert pruned["flops"] == pytest.approx(full["flops"] * 26 / 30)
    # counts that do not cover every epoch (an --eval-every > 1 run) fall back to full epochs
    assert t2a.estimate_compute(ARGV, num_train=100, steps_per_epoch=[10, 6]) == full


def test_steps_per_epoch_come_from_the_global_step_of_each_evaluation():
    assert t2a.steps_per_epoch([{"step": 10}, {"step": 16}, {"step": 26}]) == [10, 6, 10]
    assert t2a.steps_per_epoch([{"step": 10}, {"step": None}]) is None
    assert t2a.steps_per_epoch([]) is None


def test_the_headline_states_the_target_then_each_recipes_fraction_or_its_shortfall():
    runs = [{"recipe": "baseline", "returncode": 0, "final_top1": 52.0, "train_s": 1000.0},
            {"recipe": "a", "returncode": 0, "final_top1": 53.0, "reached": {"time_ratio": 0.55, "epoch": 6}},
            {"recipe": "b", "returncode": 0, "final_top1": 49.5, "reached": {"time_ratio": None, "epoch": None}},
            {"recipe": "c", "returncode": 1}]
    lines = t2a.headline(runs, epochs=8, num_train=45000)
    assert [h["measured"].split(":")[0] for h in lines] == ["baseline", "a", "b"]
    assert lines[0]["figure"] == "52.00 % in 1000 s" and "45,000 images" in lines[0]["measured"]
    assert lines[1]["figure"] == "0.55x the baseline's time (epoch 6)"
    assert lines[2]["figure"] == "did not reach it (final 49.50 %)"
    assert t2a.headline(runs[1:], epochs=8, num_train=45000) == []


def test_recompute_rederives_compute_and_comparisons_but_keeps_the_measurements(tmp_path):
    from vitdata.bench.record import read_record, write_record
    argv = [a if a != "8" else "4" for a in ARGV[2:]]   # without the recipe; patch 4 keeps the ET stages at 32 px
    evals = lambda steps, top1: [{"epoch": i + 1, "time_s": 10.0 * (i + 1), "top1": t, "top5": 90.0, "loss": 1.0,  # noqa: E731
                                  "step": s} for i, (s, t) in enumerate(zip(steps, top1))]
    runs = [{"recipe": "baseline", "argv": ["--recipe", "baseline", *argv], "returncode": 0, "wall_s": 40.0,
             "cpu_s": 70.0, "train_s": 30.0, "images_per_s": 10.0, "final_top1": 50.0, "flops": 1.0, "evals": evals([10, 20, 30], [30, 45, 50])},
            {"recipe": "vitdata", "argv": ["--recipe", "vitdata", *argv], "returncode": 0, "wall_s": 20.0,
             "cpu_s": 30.0, "train_s": 15.0, "images_per_s": 17.0, "final_top1": 49.8, "flops": 1.0, "evals": evals([10, 16, 26], [35, 49.8, 49.8])}]
    path = str(tmp_path / "t2a.json")
    write_record("time-to-accuracy", {"settings": {"epochs": 3, "num_train": 100, "tolerance": 0.3},
                                                "runs": runs, "headline": []}, path)
    t2a.main(["--recompute", path, "--why", "test"])
    rec = read_record(path)
    base, vd = rec["runs"]
    assert base["steps"] == 30 and vd["steps"] == 26 and vd["flops"] < base["flops"]
    assert vd["reached"]["epoch"] == 2 and vd["reached"]["time_ratio"] == pytest.approx(20.0 / 30.0)
    assert vd["wall_s"] == 20.0 and vd["evals"][1]["top1"] == 49.8                 # measured fields untouched
    assert rec["settings"]["recomputed"][0]["why"] == "test"
    assert rec["plot"] in (None, "t2a.png") and (rec["plot"] is None or (tmp_path / "t2a.png").exists())
    assert [h["measured"].split(":")[0] for h in rec["headline"]] == ["baseline", "vitdata"]
    with pytest.raises(SystemExit):
        t2a.main(["--recompute", path])                                               # --why is required


def test_a_run_names_its_switches_from_its_own_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"curriculum": null, "size_curriculum": true, "locality": true, '
                                     '"warmup_epochs": 0.0, "oracle": "prune-easy", "randaug_magnitude": 5.0, "lr": 0.5}')
    rec = {"out": str(run), "argv": ["--recipe", "vitdata"]}
    t2a.add_switches(rec)
    assert rec["switches"] == "size_curriculum=True, locality=True, oracle=prune-easy, warmup_epochs=0.0"
    assert rec["config"]["lr"] == 0.5
    gone = {"out": str(tmp_path / "gone")}
    t2a.add_switches(gone)
    assert "switches" not in gone and "config" not in gone
