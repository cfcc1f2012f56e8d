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
