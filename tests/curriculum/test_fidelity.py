"""The curricula follow the papers' (or released code's) numbers (docs/methods.md) at every run length and size."""
import math

import pytest

from vitdata.errors import ConfigError
from vitdata.train.lr import ComputeLR
from vitdata.curriculum.named import curriculum_schedule, et_stage_starts, size_epoch_step
from vitdata.curriculum.named import make_schedule
from vitdata.curriculum.schedule import pss_drop_ratio, pss_keep_ratio, pss_num_tokens


# ---- item 1: EfficientTrain's stages survive the patch grid, or the run is refused

def test_efficienttrain_at_64_px_with_16_px_patches_is_refused_instead_of_merging_stages():
    # 160/224 and 192/224 of 64 px are 46 and 54; on a 16-px grid both were 48 (ratio 0.75 for both).
    with pytest.raises(ConfigError) as e:
        make_schedule("efficienttrain", 30, 10, 64, patch_size=16)
    assert {"image_size", "patch_size"} <= set(e.value.fields)
    assert "patch_size 8" in str(e.value) and "image_size 96" in str(e.value)
    with pytest.raises(ConfigError):
        make_schedule("efficienttrain++", 30, 10, 64, patch_size=16)


@pytest.mark.parametrize("image_size,patch_size,sides", [(64, 8, [48, 56, None]), (32, 4, [24, 28, None]),
                                                         (224, 16, [160, 192, None]), (112, 16, [80, 96, None])])
def test_efficienttrain_keeps_three_distinct_sides_on_a_fine_enough_grid(image_size, patch_size, sides):
    s = make_schedule("efficienttrain", 300, 1, image_size, patch_size=patch_size)
    assert [k.lowpass_size for _, k in s.epoch_table()] == [sides[0]] * 3 + sides[1:]


def test_the_train_presets_for_efficienttrain_pick_a_patch_size_that_keeps_the_stages_at_64_px():
    from vitdata.train.loop import build_schedule
    from vitdata.train.config import check_train_config, parse_config
    for recipe in ("efficienttrain",):
        cfg = parse_config(["--recipe", recipe])
        check_train_config(cfg)
        assert cfg.image_size == 64 and cfg.patch_size == 8
        sides = {k.lowpass_size for _, k in build_schedule(cfg, 10).epoch_table()}
        assert sides == {48, 56, None}
    with pytest.raises(ConfigError, match=r"use --patch-size 8 or --image-size 96"):   # vitdata train's own flags
        check_train_config(parse_config(["--recipe", "efficienttrain", "--patch-size", "16"]))


# ---- item 2: EfficientTrain++'s learning rate follows compute

def test_efficienttrain_pp_lr_warms_up_over_20_percent_of_compute_and_follows_a_cosine_of_compute():
    # DeiT-S, E = 200 equivalent epochs: 469 real epochs; the first full-size (224) segment starts after
    # 80 % of the compute: LR = 0.5 (1 + cos(0.75 pi)) = 14.6 % of the peak (official); by steps with a
    # 1-epoch warm-up it was 1.8 %.
    s = make_schedule("efficienttrain++", epochs=469, steps_per_epoch=10)
    lr = ComputeLR(s, peak=1.0, floor=0.0, warmup=0.2)
    first_224 = next(e for e, k in s.epoch_table() if (k.lowpass_size or k.image_size) == 224)
    assert lr.position(first_224, 0, 10) == pytest.approx(0.8, abs=0.005)
    assert lr(first_224, 0, 10) == pytest.approx(0.146, abs=0.006)
    from vitdata.train.lr import lr_at
    assert lr_at(first_224 * 10, 4690, 10, 1.0, 0.0) == pytest.approx(0.018, abs=0.004)
    # warm-up ends with the two 96-px segments (20 % of compute), not after one epoch
    end_96 = next(e for e, k in s.epoch_table() if k.lowpass_size == 160)
    assert lr.position(end_96, 0, 10) == pytest.approx(0.2, abs=0.005)
    assert lr(end_96 // 2, 0, 10) == pytest.approx(0.5, abs=0.02)
    assert lr(468, 9, 10) == pytest.approx(0.0, abs=1e-3)


def test_the_train_loop_uses_the_compute_lr_for_efficienttrain_pp():
    from vitdata.train.config import TrainConfig
    from vitdata.train.lr import build_lr
    cfg = TrainConfig(epochs=20, image_size=32, patch_size=4, curriculum="efficienttrain++", lr=1e-3, min_lr=0.0)
    from vitdata.train.loop import build_schedule
    sched = build_schedule(cfg, 10)
    lr = build_lr(cfg, sched, 10)
    assert isinstance(lr, ComputeLR) and lr.warmup == 0.2
    base = build_lr(TrainConfig(epochs=20, lr=1e-3), build_schedule(TrainConfig(epochs=20), 10), 10)
    assert not isinstance(base, ComputeLR)


# ---- item 5: the size curriculum reaches and trains the last size at any run length

@pytest.mark.parametrize("epochs", [3, 6, 7, 20, 35, 60, 300])
def test_the_size_curriculum_always_trains_the_final_size(epochs):
    s = curriculum_schedule(epochs, 5, 224, patch_size=16, size_curriculum=True)
    sizes = [s(e, 0).image_size for e in range(epochs)]
    assert sizes[-1] == 224 and sizes == sorted(sizes)


def test_the_size_curriculum_steps_every_5_epochs_like_the_paper_when_the_run_has_room():
    assert size_epoch_step(300, 7) == 5 and size_epoch_step(60, 7) == 5     # the paper's table at 224
    assert size_epoch_step(20, 7) == 2 and size_epoch_step(6, 7) == 1
    s = curriculum_schedule(300, 1, 224, patch_size=16, size_curriculum=True)
    assert [e for e, _ in s.epoch_table()] == [0, 5, 10, 15, 20, 25, 30]
    six = curriculum_schedule(6, 1, 224, patch_size=16, size_curriculum=True)  # was 32..192, never 224
    assert [s(0, 0).image_size for s in [six]] == [64] and [k.image_size for _, k in six.epoch_table()][-1] == 224
    step3 = curriculum_schedule(60, 1, 224, patch_size=16, size_curriculum=True, size_epoch_step=3)
    assert [e for e, _ in step3.epoch_table()] == [0, 3, 6, 9, 12, 15, 18]
    with pytest.raises(ConfigError) as e:
        curriculum_schedule(20, 1, 224, patch_size=16, size_curriculum=True, size_epoch_step=5)
    assert "size_epoch_step" in e.value.fields


# ---- item 7: ET truncates its stage starts; PSS rounds ties to even

def test_efficienttrain_stage_starts_truncate_like_the_official_code():
    assert et_stage_starts(300) == [0, 60, 120, 180, 240]
    assert et_stage_starts(12) == [0, 2, 4, 7, 9]          # rounding gave 0, 2, 5, 7, 10
    assert [e for e, _ in make_schedule("efficienttrain", 12, 1).epoch_table()] == [0, 2, 4, 7, 9]


def test_pss_rounds_ties_half_to_even_like_python_round():
    # r = 0.5 exactly: r * 5 = 2.5 -> 2 (0.4), not 3 (0.6); 0.5 * 197 = 98.5 tokens -> 98
    assert pss_drop_ratio("cyclic", 0, 0, 10, 10, start=0.5, end=0.5, cooldown=0) == pytest.approx(0.4)
    assert pss_keep_ratio("cyclic", 0, 0, 10, 10, start=0.5, end=0.5, cooldown=0) == pytest.approx(0.6)
    assert pss_drop_ratio("cyclic", 0, 0, 10, 10, start=0.7, end=0.7, cooldown=0) == pytest.approx(0.8)  # 3.5 -> 4
    assert pss_num_tokens(0.5, 197) == 98 and pss_num_tokens(0.5, 17) == 8
    assert [pss_num_tokens(r) for r in (1.0, 0.8, 0.6, 0.4, 0.2)] == [197, 158, 118, 79, 39]
    from vitdata.train.models import num_kept_tokens
    assert num_kept_tokens(17, 0.5) == 8 and num_kept_tokens(197, 0.5) == 98
    assert math.isclose(pss_keep_ratio("cyclic", 0, 0, 300, 100), 0.2)
