"""Schedules: the docs/methods.md tables, PSS token fractions, composition, size rounding and serialisation."""
import dataclasses
import json

import numpy as np
import pytest

from vitdata.errors import ConfigError, StateError
from vitdata.curriculum.schedule import (PSS, Constant, EpochTable, Knobs, Ramp, Schedule, combine, pss_drop_ratio, pss_keep_ratio, pss_num_tokens)
from vitdata.curriculum.named import SCHEDULE_NAMES, make_schedule


def test_efficienttrain_at_300_epochs_reproduces_the_iccv_table():
    s = make_schedule("efficienttrain", epochs=300, steps_per_epoch=10)
    table = {(0, 59): (160, 1), (60, 119): (160, 3), (120, 179): (160, 5), (180, 239): (192, 7), (240, 299): (224, 9)}
    for (first, last), (b, m) in table.items():
        for epoch in (first, (first + last) // 2, last):
            for step in (0, 9):
                k = s(epoch, step)
                assert k.image_size == 224
                assert k.randaug_magnitude == m
                assert k.lowpass_size == (None if b == 224 else b)
    assert [e for e, _ in s.epoch_table()] == [0, 60, 120, 180, 240]


def test_efficienttrain_scales_its_stages_to_the_run_and_the_image_size():
    s = make_schedule("efficienttrain", epochs=100, steps_per_epoch=1)
    assert [e for e, _ in s.epoch_table()] == [0, 20, 40, 60, 80]
    big = make_schedule("efficienttrain", epochs=300, steps_per_epoch=1, image_size=384)
    assert [k.lowpass_size for _, k in big.epoch_table()] == [274, 274, 274, 330, None]  # 160*384/224 -> even
    patched = make_schedule("efficienttrain", epochs=300, steps_per_epoch=1, image_size=384, patch_size=16)
    assert [k.lowpass_size for _, k in patched.epoch_table()] == [272, 272, 272, 336, None]
    resize = make_schedule("efficienttrain", epochs=300, steps_per_epoch=1, lowpass=False)
    assert [(k.image_size, k.lowpass_size, k.lowpass_filter) for _, k in resize.epoch_table()] == [
        (224, 160, "lanczos"), (224, 160, "lanczos"), (224, 160, "lanczos"), (224, 192, "lanczos"),
        (224, None, "lanczos")]
    direct = make_schedule("efficienttrain", epochs=300, steps_per_epoch=1, lowpass=False, augment_at="stage")
    assert [(k.image_size, k.lowpass_size) for _, k in direct.epoch_table()] == [
        (160, None), (160, None), (160, None), (192, None), (224, None)]
    tiny = make_schedule("efficienttrain", epochs=3, steps_per_epoch=1)  # starts 0,0,1,1,2 collide: later wins
    assert [k.randaug_magnitude for _, k in tiny.epoch_table()] == [3.0, 7.0, 9.0]  # the last stage always runs


def test_efficienttrain_pp_segments_cost_the_same_compute():
    s = make_schedule("efficienttrain++", epochs=469, steps_per_epoch=1)
    rows = s.epoch_table()
    assert [k.randaug_magnitude for _, k in rows] == [float(i) for i in range(10)]
    starts = [e for e, _ in rows] + [469]
    by_size = {}
    for (e, k), nxt in zip(rows, starts[1:]):
        side = k.lowpass_size or k.image_size
        by_size[side] = by_size.get(side, 0) + nxt - e
    # docs/methods.md §3.3, DeiT-S E=200: 217 @96, 157 @160, 54 @192, 41 @224 real epochs
    for size, epochs in {96: 217, 160: 157, 192: 54, 224: 41}.items():
        assert abs(by_size[size] - epochs) <= 2


def test_progressive_size_steps_32_px_every_5_epochs_up_to_224():
    s = make_schedule("progressive-size", epochs=100, steps_per_epoch=50, epoch_step=5)
    assert [s(e, 0).image_size for e in range(0, 35, 5)] == [32, 64, 96, 128, 160, 192, 224]
    assert [s(e, 49).image_size for e in range(4, 35, 5)] == [32, 64, 96, 128, 160, 192, 224]
    assert s(99, 0).image_size == 224
    assert s.image_sizes() == [32, 64, 96, 128, 160, 192, 224]


def test_progressive_size_default_epoch_step_is_the_papers_5_when_the_run_has_room():
    assert [e for e, _ in make_schedule("progressive-size", epochs=60, steps_per_epoch=1).epoch_table()] == \
        [0, 5, 10, 15, 20, 25, 30]
    rows = make_schedule("progressive-size", epochs=300, steps_per_epoch=1).epoch_table()
    assert rows[-1] == (30, rows[-1][1]) and rows[-1][1].image_size == 224   # not 150 (a 25-epoch step)
    odd = make_schedule("progressive-size", epochs=12, steps_per_epoch=1, image_size=200, init_size=64, step_px=48)
    assert [k.image_size for _, k in odd.epoch_table()] == [64, 112, 160, 200]


def test_pss_cyclic_token_fractions_match_methods():
    spe = 900
    ratios = np.array([pss_drop_ratio("cyclic", 0, i, 300, spe, cooldown=10) for i in range(spe)])
    share = {r: np.mean(np.isclose(ratios, r)) for r in (0.0, 0.2, 0.4, 0.6, 0.8)}
    assert abs(share[0.0] - 2 / 9) < 0.01 and abs(share[0.8] - 1 / 9) < 0.01
    for r in (0.2, 0.4, 0.6):
        assert abs(share[r] - 2 / 9) < 0.01
    assert ratios[0] == 0.8 and ratios[spe // 2] == 0.0
    keep = [pss_keep_ratio("cyclic", 0, i, 300, spe, cooldown=10) for i in range(spe)]
    tokens = [pss_num_tokens(k, 197) for k in keep]
    assert sorted(set(tokens)) == [39, 79, 118, 158, 197]
    assert {r: pss_num_tokens(1 - r) for r in (0.0, 0.2, 0.4, 0.6, 0.8)} == {0.0: 197, 0.2: 158, 0.4: 118, 0.6: 79, 0.8: 39}
    assert abs(np.mean(tokens) / 197 - 0.64) < 0.01


@pytest.mark.parametrize("kind", ["cyclic", "linear", "cosine"])
def test_pss_is_rounded_clamped_and_full_in_cooldown(kind):
    epochs, spe = 30, 20
    values = {pss_drop_ratio(kind, e, s, epochs, spe, cooldown=3) for e in range(epochs) for s in range(spe)}
    assert values <= {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}
    assert all(pss_keep_ratio(kind, e, s, epochs, spe, cooldown=3) == 1.0 for e in range(27, 30) for s in range(spe))
    assert pss_drop_ratio(kind, 0, 0, epochs, spe, start=1.7, end=1.2, cooldown=3) == 1.0  # clamped


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_pss_linear_and_cosine_fall_from_start_to_end_over_the_run(kind):
    seq = [pss_drop_ratio(kind, e, s, 30, 10, cooldown=3) for e in range(27) for s in range(10)]
    assert seq[0] == 0.8 and seq[-1] == 0.0
    assert all(b <= a for a, b in zip(seq, seq[1:]))


def test_pss_default_cooldown_is_10_of_300_epochs():
    assert pss_keep_ratio("cyclic", 289, 0, 300, 100) == 0.2
    assert pss_keep_ratio("cyclic", 290, 0, 300, 100) == 1.0
    assert pss_keep_ratio("cyclic", 29, 0, 30, 100) == 1.0  # round(10 * 30 / 300) = 1


def test_a_pss_schedule_gives_full_tokens_at_eval():
    s = make_schedule("constant", epochs=10, steps_per_epoch=10, pss="cyclic", pss_cooldown=1)
    assert s(0, 0).keep_ratio == pytest.approx(0.2)
    ev = s.for_eval(0)
    assert ev.keep_ratio == 1.0 and ev.erase_ratio == 0.0 and ev.image_size == 224


def test_pss_honours_a_shortened_epoch():
    s = make_schedule("constant", epochs=10, steps_per_epoch=100, pss="cyclic", pss_cooldown=1)
    assert s(0, 25, steps_in_epoch=50).keep_ratio == 1.0   # mid-epoch of a 50-step epoch
    assert s(0, 25).keep_ratio < 1.0


def test_schedules_stack_efficienttrain_with_the_size_curriculum_and_pss():
    epochs, spe = 300, 10
    base = make_schedule("efficienttrain", epochs, spe)
    size = make_schedule("progressive-size", epochs, spe, epoch_step=5)
    s = combine(base, image_size=size, keep_ratio=PSS("cyclic", cooldown=10))
    k = s(10, 0)
    assert (k.image_size, k.randaug_magnitude, k.lowpass_size, k.keep_ratio) == (96, 1.0, None, pytest.approx(0.2))
    k = s(200, 5)  # size reached 224, ET stage 4: B=192 crop, m=7
    assert (k.image_size, k.randaug_magnitude, k.lowpass_size, k.keep_ratio) == (224, 7.0, 192, 1.0)
    assert s(295, 0).keep_ratio == 1.0
    assert s.replace(erase_ratio=0.3)(0, 0).erase_ratio == 0.3
    with pytest.raises(ConfigError, match="different lengths"):
        combine(base, image_size=make_schedule("progressive-size", 100, spe))


def test_linear_ramps_reach_their_ends():
    s = make_schedule("linear", epochs=11, steps_per_epoch=4, magnitude=(0, 10), size=(128, 224), patch_size=16)
    assert s(0, 0).randaug_magnitude == 0 and s(10, 3).randaug_magnitude == 10
    assert s(5, 0).randaug_magnitude == pytest.approx(5.0)
    assert s(0, 0).image_size == 128 and s(10, 0).image_size == 224
    assert all(sz % 16 == 0 for sz in s.image_sizes())
    per_step = make_schedule("linear", epochs=2, steps_per_epoch=4, per="step", shape="cosine")
    mags = [per_step(e, i).randaug_magnitude for e in range(2) for i in range(4)]
    assert mags[0] == 0.0 and all(b > a for a, b in zip(mags, mags[1:]))


def test_sizes_round_to_the_patch_size_or_are_refused_naming_the_fields():
    assert Schedule(epochs=1, steps_per_epoch=1, image_size=200, patch_size=16)(0).image_size == 208
    assert Schedule(epochs=1, steps_per_epoch=1, image_size=5, patch_size=16)(0).image_size == 16
    with pytest.raises(ConfigError) as e:
        Schedule(epochs=1, steps_per_epoch=1, image_size=200, patch_size=16, round_sizes=False)
    assert set(e.value.fields) == {"image_size", "patch_size"}
    with pytest.raises(ConfigError) as e:  # found at construction, not mid-run
        make_schedule("progressive-size", 40, 1, init_size=40, patch_size=16, round_sizes=False)
    assert "image_size" in e.value.fields


def test_bad_knob_values_fail_when_the_schedule_is_built():
    with pytest.raises(ConfigError, match="erase_ratio"):
        Schedule(epochs=3, steps_per_epoch=1, erase_ratio=EpochTable((0, 2), (0.1, 1.5)))
    with pytest.raises(ConfigError, match="keep_ratio"):
        Schedule(epochs=3, steps_per_epoch=1, keep_ratio=0.0)
    with pytest.raises(ConfigError, match="unknown schedule"):
        make_schedule("cosine-annealing", 3, 1)
    with pytest.raises(ConfigError, match="randaug_magnitude"):
        make_schedule("efficienttrain", 300, 1, randaug_magnitude=9)
    with pytest.raises(ConfigError):
        make_schedule("constant", 3, 1, pss="triangle")


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_named_schedule_round_trips_through_json(name):
    s = make_schedule(name, 30, 7, pss="cyclic", erase_ratio=0.1)
    back = Schedule.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and back.fingerprint() == s.fingerprint()
    assert all(back(e, i) == s(e, i) for e in range(30) for i in (0, 3, 6))


def test_a_combined_schedule_round_trips_and_newer_formats_are_refused():
    s = combine(make_schedule("efficienttrain", 30, 5, patch_size=16), image_size=Ramp(64, 224, 0, 20),
                keep_ratio=PSS("linear", 0.6, 0.0, 2), randaug_num_ops=Constant(3))
    d = json.loads(json.dumps(s.to_dict()))
    assert Schedule.from_dict(d) == s
    with pytest.raises(StateError, match="newer"):
        Schedule.from_dict({**d, "format": 7})
    with pytest.raises(StateError):
        Schedule.from_dict({**d, "rules": {"image_size": {"type": "sawtooth"}}})


def test_schedules_are_pure_and_knobs_are_frozen():
    s = make_schedule("efficienttrain", 300, 10, pss="cyclic")
    assert s(123, 4) == s(123, 4) == make_schedule("efficienttrain", 300, 10, pss="cyclic")(123, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s(0).image_size = 32
    assert isinstance(s(0), Knobs)


def test_efficienttrain_pp_crops_and_augments_at_full_size_then_resizes_with_lanczos_as_released():
    # ET++'s released pipeline: RandomResizedCrop(224), flip, RandAugment, then Resize(B, LANCZOS)
    # (docs/methods.md §3.2); augment_at="stage" keeps the cheaper crop straight to B.
    s = make_schedule("efficienttrain++", epochs=469, steps_per_epoch=1)
    rows = s.epoch_table()
    assert {k.image_size for _, k in rows} == {224} and {k.lowpass_filter for _, k in rows} == {"lanczos"}
    assert [k.lowpass_size for _, k in rows if k.lowpass_size][:3] == [96, 96, 160]
    assert rows[-1][1].lowpass_size is None
    direct = make_schedule("efficienttrain++", epochs=469, steps_per_epoch=1, augment_at="stage")
    assert [k.image_size for _, k in direct.epoch_table()] == [k.lowpass_size or 224 for _, k in rows]
    assert {k.lowpass_size for _, k in direct.epoch_table()} == {None}
    with pytest.raises(ConfigError, match="augment_at"):
        make_schedule("efficienttrain++", epochs=469, steps_per_epoch=1, augment_at="half")


def test_a_schedule_records_a_lanczos_filter_and_leaves_the_default_out_of_its_fingerprint():
    lanczos = make_schedule("efficienttrain++", epochs=30, steps_per_epoch=2)
    again = Schedule.from_dict(lanczos.to_dict())
    assert again == lanczos and again(0, 0).lowpass_filter == "lanczos"
    plain = make_schedule("efficienttrain", epochs=30, steps_per_epoch=2)
    assert "lowpass_filter" not in plain.to_dict()["rules"]       # fingerprints of earlier runs still match
    with pytest.raises(ConfigError, match="lowpass_filter"):
        Schedule(epochs=2, steps_per_epoch=1, lowpass_size=16, lowpass_filter="bicubic")
