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
