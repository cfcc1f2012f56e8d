"""vitdata train with a pruning oracle: shorter epochs while it prunes, the full data in its annealed tail."""
import json

import pytest

from vitdata.train import main

TINY = ["--synthetic-samples", "600", "--batch-size", "32", "--depth", "1", "--image-size", "32", "--patch-size", "8",
        "--workers", "1", "--no-progress", "--no-report", "--log-every", "1"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("VITDATA_CACHE", str(d))
    return d


def steps_per_epoch(run):
    counts = {}
    for line in open(run / "log.jsonl"):
        r = json.loads(line)
        if r.get("kind") == "step":
            e = int(r["epoch"] - 1e-9)
            counts[e] = counts.get(e, 0) + 1
    return [counts.get(e, 0) for e in range(max(counts) + 1)]


@pytest.mark.heavy
def test_prune_easy_shortens_epochs_and_its_last_eighth_reads_everything(cache, tmp_path):
    # InfoBatch anneals at 0.875 of the run: of 8 epochs, epoch 7 reads the full data again. Before, the
    # train loop built the policy without the run's length, so it pruned to the very end.
    run = tmp_path / "run"
    main(TINY + ["--epochs", "8", "--oracle", "prune-easy", "--out", str(run)])
    steps = steps_per_epoch(run)
    full = steps[0]                      # epoch 0: nothing seen yet, nothing pruned
    assert len(steps) == 8 and full == 540 // 32
    assert all(s < full for s in steps[1:7]), steps   # well-learned samples pruned (ratio 0.5 of about half)
    assert steps[7] == full, steps
