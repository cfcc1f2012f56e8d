"""vitdata train with a pruning oracle: shorter epochs while it prunes, the full data in its annealed tail."""
import json

import pytest

from vitdata.errors import ConfigError
from vitdata.train.loop import main

TINY = ["--synthetic-samples", "600", "--batch-size", "32", "--depth", "1", "--image-size", "32", "--patch-size", "8",
        "--workers", "1", "--no-progress", "--no-report", "--log-every", "1"]


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


def test_oracle_mixing_is_refused_without_mixing_or_the_data_centric_oracle():
    from vitdata.errors import ConfigError
    from vitdata.train.config import check_train_config, parse_config
    for argv in (["--oracle", "data-centric", "--oracle-mixing"],
                 ["--oracle", "weighted", "--mixup", "0.8", "--oracle-mixing"]):
        with pytest.raises(ConfigError) as e:
            check_train_config(parse_config(argv))
        assert "oracle_mixing" in e.value.fields
    check_train_config(parse_config(["--oracle", "data-centric", "--cutmix", "1.0", "--oracle-mixing"]))


@pytest.mark.heavy
def test_oracle_mixing_sets_timms_mix_prob_each_epoch(cache, tmp_path, monkeypatch):
    # The lever reaches timm's Mixup: its mix_prob at every step equals the oracle's plan of that epoch
    # (0 in formation), and the log records it.
    from timm.data import Mixup
    seen = []
    call = Mixup.__call__

    def spy(self, x, target):
        seen.append(self.mix_prob)
        return call(self, x, target)
    monkeypatch.setattr(Mixup, "__call__", spy)
    run = tmp_path / "run"
    main(TINY + ["--epochs", "3", "--mixup", "0.8", "--oracle", "data-centric", "--oracle-mixing", "--out", str(run)])
    spe = 540 // 32
    assert len(seen) == 3 * spe and set(seen[:spe]) == {0.0}
    logged = [r["oracle"] for r in map(json.loads, open(run / "log.jsonl")) if r.get("kind") == "epoch" and "oracle" in r]
    assert [o["mix_prob"] for o in logged[:2]] == [seen[spe], seen[2 * spe]]


def test_a_pruned_epoch_covers_the_same_stretch_of_the_cosine():
    # With a pruning oracle an epoch has fewer steps; the LR follows the epoch's progress, so the run still
    # ends at the floor (a global-step cosine would stop at about 15 % of the peak after 25 % pruning).
    from vitdata.train.lr import build_lr, lr_at
    from vitdata.train.config import parse_config
    cfg = parse_config(["--epochs", "4", "--lr", "1e-3", "--min-lr", "0", "--warmup-epochs", "1"])
    lr = build_lr(cfg, None, steps_per_epoch=10)
    assert [lr(1, i, 10, 10 + i) for i in range(10)] == [lr_at(10 + i, 40, 10, 1e-3, 0.0) for i in range(10)]
    assert lr(2, 3, 6, 23) == pytest.approx(lr_at(25, 40, 10, 1e-3, 0.0))      # 3 of 6 steps = half the epoch
    assert lr(3, 5, 6, 29) == pytest.approx(lr_at(38, 40, 10, 1e-3, 0.0))      # the last step nears the floor
    assert lr(3, 5, 6, 29) < 0.02 * 1e-3 < 0.25 * 1e-3 < lr_at(29, 40, 10, 1e-3, 0.0)


def test_a_cosine_span_below_1_cuts_a_longer_cosine_at_the_runs_end_as_the_1gpu24h_paper_did():
    # The 1-GPU/24-hour paper declares a 300 + 10-epoch cosine without warm-up and stops at its 24-hour budget,
    # with the LR still at 0.8-0.96 of its peak. A span of 0.2 ends the run at cos(0.2 pi) of the way down.
    import math

    from vitdata.train.config import check_train_config, parse_config
    from vitdata.train.lr import build_lr
    cfg = parse_config(["--recipe", "1gpu24h", "--epochs", "4", "--lr", "1e-3", "--min-lr", "0",
                        "--cosine-span", "0.2"])
    check_train_config(cfg)
    assert cfg.warmup_epochs == 0.0
    lr = build_lr(cfg, None, steps_per_epoch=10)
    assert lr(0, 0, 10, 0) == pytest.approx(1e-3)
    last = lr(3, 9, 10, 39)
    assert last == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 39 / 200)))
    assert 0.8e-3 < last < 0.96e-3
    full = build_lr(parse_config(["--recipe", "1gpu24h", "--epochs", "4", "--lr", "1e-3", "--min-lr", "0"]), None,
                    steps_per_epoch=10)
    assert full(3, 9, 10, 39) < 0.01e-3                   # the default span 1 decays to the floor
    for bad in ("0", "1.5"):
        with pytest.raises(ConfigError):
            check_train_config(parse_config(["--cosine-span", bad]))


@pytest.mark.parametrize("image_size, argv, patch", [(64, [], 8), (112, [], 16), (224, [], 16), (128, [], 16),
                                                     (112, ["--patch-size", "8"], 8)])
def test_the_efficienttrain_recipe_changes_the_patch_only_where_the_grid_merges_its_stages(image_size, argv, patch,
                                                                                           capsys):
    # At 112 px the 16-px grid keeps EfficientTrain's stages apart (80/96/112 px = 5/6/7 patches); at 64 px it
    # merges the 160 and 192 stages (both 48 px), so the recipe takes 8-px patches there, and says so.
    from vitdata.train.config import check_train_config, parse_config
    cfg = parse_config(["--recipe", "efficienttrain", "--image-size", str(image_size), *argv])
    check_train_config(cfg)
    assert cfg.patch_size == patch
    said = capsys.readouterr().err
    assert ("uses --patch-size 8" in said) == (image_size == 64 and not argv)
