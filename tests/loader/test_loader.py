"""The loader contract on CPU: order, pairing, schedule, RandAugment, resume, plans, backends, errors."""
import dataclasses

import numpy as np
import pytest
import torch

from vitdata import ConfigError, LoaderConfig, StateError, create_loader
from vitdata.loader.config import AugmentConfig, EvalConfig, OutputConfig, ScheduleConfig
from vitdata.data.sampler import EpochPlan

from .conftest import decode_batch, pixel_ids

FULL_VIEW = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)
# "dali-inline": the DALI backend with num_workers=0 (the source runs in the pipeline's own thread)
BACKENDS = ["dali", "dali-inline", "torch"]


def cfg_for(data, backend="dali", **kw):
    workers = 0 if backend == "dali-inline" else 2
    base = dict(data=data, batch_size=8, image_size=32, backend=backend.split("-")[0], num_workers=workers,
                num_threads=2)
    base.update(kw)
    return LoaderConfig(**base)


def run_epochs(loader, epochs, start=0):
    out = []
    for e in range(start, start + epochs):
        loader.set_epoch(e)
        out.extend((e, b) for b in loader)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_sample_is_read_once_per_epoch_and_labels_stay_paired(tiny_data, backend):
    loader = create_loader(cfg_for(tiny_data, backend, augment=FULL_VIEW))
    try:
        pid = pixel_ids(loader.index)
        assert len(loader) == 8
        for epoch in range(2):
            loader.set_epoch(epoch)
            seen = []
            for batch in loader:
                assert batch.images.shape == (8, 3, 32, 32) and batch.images.dtype == torch.float32
                assert batch.labels.dtype == torch.int64 and batch.ids.dtype == torch.int64
                for (img_id, img_label), i, y in zip(decode_batch(batch.images), batch.ids.tolist(),
                                                     batch.labels.tolist()):
                    assert img_id == pid[i] and img_label == y == loader.index.label[i]
                seen += batch.ids.tolist()
            assert sorted(seen) == list(range(64))
            assert seen == loader.sampler.epoch_ids(epoch).reshape(-1).tolist()
    finally:
        loader.close()


def test_size_schedule_changes_output_shape_at_the_right_step(tiny_data):
    sched = ScheduleConfig(name="linear", epochs=2, kwargs=dict(size=(16, 32), per="step", magnitude=None))
    # patch_size=1: sizes unrounded (the default rounds them to 16 px, so epoch 0 would stay at 16)
    loader = create_loader(cfg_for(tiny_data, augment=dataclasses.replace(FULL_VIEW, patch_size=1), schedule=sched))
    try:
        for epoch, batch in run_epochs(loader, 2):
            pass
        loader2 = loader
        shapes = []
        loader2.set_epoch(0)
        for step, batch in enumerate(loader2):
            expect = loader.schedule(0, step).image_size
            assert batch.knobs.image_size == expect
            shapes.append(batch.images.shape[-1])
            assert batch.images.shape[-2:] == (expect, expect)
        assert shapes == sorted(shapes) and shapes[0] == 16 and shapes[-1] > 16
    finally:
        loader.close()


def test_randaug_magnitude_follows_the_schedule(tiny_data):
    identity_like = ("equalize", "auto_contrast")
    view = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    plain = create_loader(cfg_for(tiny_data, augment=AugmentConfig(randaug=False, **view)))
    zero = create_loader(cfg_for(tiny_data, augment=AugmentConfig(randaug=True, randaug_magnitude=0.0,
                                                                  randaug_exclude=identity_like, **view)))
    ramp = create_loader(cfg_for(tiny_data, augment=AugmentConfig(randaug=True, randaug_exclude=identity_like, **view),
                                 schedule=ScheduleConfig(name="linear", epochs=1,
                                                         kwargs=dict(magnitude=(0.0, 10.0), per="step"))))
    try:
        a = [b for b in plain]
        z = [b for b in zero]
        r = [b for b in ramp]
        for bp, bz in zip(a, z):
            assert torch.equal(bp.ids, bz.ids)
            assert torch.allclose(bp.images, bz.images, atol=1e-5), "magnitude 0 must leave images unchanged"
            assert float(bz.aug_magnitude.max()) == 0.0
        changed = []
        for step, (bp, br) in enumerate(zip(a, r)):
            m = ramp.schedule(0, step, steps_in_epoch=len(ramp)).randaug_magnitude
            assert br.knobs.randaug_magnitude == pytest.approx(m)
            assert np.allclose(br.aug_magnitude.numpy(), m)
            changed.append(float((bp.images - br.images).abs().mean()))
        assert changed[0] < 1e-5 and np.mean(changed[-3:]) > 0.05  # step 0 has magnitude 0, late steps are strong
    finally:
        for ld in (plain, zero, ramp):
            ld.close()


@pytest.mark.heavy
@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_reproduces_remaining_ids_and_pixels_bit_exactly(tiny_data, backend):
    cfg = cfg_for(tiny_data, backend,
                  schedule=ScheduleConfig(name="linear", epochs=3, kwargs=dict(size=(16, 32), per="step")))
    ref_loader = create_loader(cfg)
    ref = [(e, b.ids.clone(), b.images.clone()) for e, b in run_epochs(ref_loader, 3)]
    ref_loader.close()

    got = []
    loader = create_loader(cfg)
    loader.set_epoch(0)
    for i, b in enumerate(loader):
        got.append((0, b.ids.clone(), b.images.clone()))
        if i == 2:
            break
    state = loader.state_dict()
    loader.close()
    # Resume twice: mid-epoch 0, then at the boundary after epoch 0 completes (chained resumes).
    loader = create_loader(cfg)
    loader.load_state_dict(state)
    loader.set_epoch(0)
    got += [(0, b.ids.clone(), b.images.clone()) for b in loader]
    state = loader.state_dict()
    loader.close()
    loader = create_loader(cfg)
    loader.load_state_dict(state)
    for e in (1, 2):
        loader.set_epoch(e)
        for i, b in enumerate(loader):
            got.append((e, b.ids.clone(), b.images.clone()))
            if e == 1 and i == 4:
                state = loader.state_dict()
                loader.close()
                loader = create_loader(cfg)
                loader.load_state_dict(state)
                got += [(1, b.ids.clone(), b.images.clone()) for b in loader]
                break
    loader.close()
    assert [e for e, _, _ in got] == [e for e, _, _ in ref]
    for (e, ids, img), (_, rids, rimg) in zip(got, ref):
        assert torch.equal(ids, rids)
        assert torch.equal(img, rimg), f"pixels differ in epoch {e}"


def test_state_is_refused_for_another_configuration(tiny_data):
    loader = create_loader(cfg_for(tiny_data, augment=FULL_VIEW))
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    loader.close()
    for change, field in (({"batch_size": 4}, "batch_size"), ({"seed": 1}, "seed"), ({"backend": "torch"}, "backend")):
        other = create_loader(cfg_for(tiny_data, augment=FULL_VIEW, **change))
        with pytest.raises(StateError, match=field):
            other.load_state_dict(state)
        other.close()


class _WeightsOracle:
    """Stands in for DifficultyOracle: plans epoch e+1 with weights favouring ids < 8."""

    def __init__(self, n):
        self.n, self.calls, self.reports = n, [], 0

    def report(self, ids, losses, **kw):
        self.reports += 1

    def end_epoch(self, epoch):
        self.calls.append(epoch)
        w = np.ones(self.n)
        w[:8] = 20.0
        return EpochPlan(weights=w, aug_magnitude=np.full(self.n, 1.0, np.float32))


def test_weights_from_the_oracle_plan_shift_the_sampled_distribution(tiny_data):
    loader = create_loader(cfg_for(tiny_data, augment=dataclasses.replace(FULL_VIEW, randaug=True,
                                                                          randaug_magnitude=2.0)))
    oracle = _WeightsOracle(64)
    loader.oracle = oracle
    try:
        counts = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            ids = []
            for b in loader:
                loader.report(b.ids, torch.zeros(len(b.ids)))
                ids += b.ids.tolist()
                assert np.allclose(b.aug_magnitude.numpy(), 2.0 + (1.0 if epoch else 0.0))
            counts.append(np.bincount(ids, minlength=64))
        assert oracle.calls == [0, 1] and oracle.reports == 16   # each epoch ended as its last batch is consumed
        assert counts[0][:8].sum() == 8                  # uniform epoch: each id once
        assert counts[1][:8].sum() > 4 * 8               # favoured ids: ~20/(20*8+56) of 64 draws each
        assert counts[1][:8].sum() == (loader.sampler.epoch_ids(1) < 8).sum()
    finally:
        loader.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_reads_every_sample_once_and_trims_padding(tiny_data, backend):
    loader = create_loader(cfg_for(tiny_data, backend, batch_size=10,
                                   eval=EvalConfig(crop_pct=1.0)), split="eval")
    try:
        pid = pixel_ids(loader.index)
        sizes, seen = [], []
        for b in loader:
            sizes.append(len(b.ids))
            for (img_id, _), i in zip(decode_batch(b.images), b.ids.tolist()):
                assert img_id == pid[i]
            seen += b.ids.tolist()
        assert sizes == [10] * 6 + [4] and sorted(seen) == list(range(64))
    finally:
        loader.close()


def test_both_backends_yield_the_same_contract(tiny_data):
    out = {}
    for backend in BACKENDS:
        loader = create_loader(cfg_for(tiny_data, backend, output=OutputConfig(dtype="bfloat16", channels_last=True)))
        batches = list(loader)
        out[backend] = batches
        for b in batches:
            assert b.images.shape == (8, 3, 32, 32) and b.images.dtype == torch.bfloat16
            assert b.images.is_contiguous(memory_format=torch.channels_last)
            assert b.labels.shape == b.ids.shape == (8,) and b.labels.dtype == b.ids.dtype == torch.int64
        loader.close()
    ids = {k: [b.ids.tolist() for b in v] for k, v in out.items()}
    assert ids["dali"] == ids["torch"]


def test_eval_pixels_agree_between_backends(tiny_data):
    imgs = {}
    for backend in BACKENDS:
        loader = create_loader(cfg_for(tiny_data, backend, eval=EvalConfig(crop_pct=1.0)), split="eval")
        imgs[backend] = torch.cat([b.images for b in loader])
        loader.close()
    diff = (imgs["dali"] - imgs["torch"]).abs() * 0.226 * 255
    assert float(diff.mean()) <= 4.0  # docs/reliability.md A5: mean abs difference <= 4 on the 0..255 scale


@pytest.mark.parametrize("change, fields", [
    (dict(batch_size=0), "batch_size"),
    (dict(augment=AugmentConfig(scale=(0.5, 0.2))), "augment.scale"),
    (dict(output=OutputConfig(dtype="int8")), "output.dtype"),
    (dict(backend="dali", num_workers=-1), "num_workers"),
    (dict(augment=AugmentConfig(randaug_interpolation="bicubic")), "augment.randaug_interpolation"),
    (dict(on_error="ignore"), "on_error"),
    (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(augment=AugmentConfig(randaug_num_ops=3, randaug_max_ops=2)), "augment.randaug_max_ops"),
    (dict(schedule=ScheduleConfig(name="linear", epochs=2, kwargs=dict(randaug_num_ops=4))), "augment.randaug_max_ops"),
    (dict(schedule=ScheduleConfig(kwargs=dict(randaug_num_ops=4))), "augment.randaug_num_ops"),
    (dict(augment=AugmentConfig(randaug_magnitude=5.0), schedule=ScheduleConfig(name="linear", epochs=2)),
     "augment.randaug_magnitude"),
    (dict(schedule=ScheduleConfig(name="linear", schedule=object())), "schedule.schedule"),
    (dict(data=""), "data"),
])
def test_bad_combinations_fail_at_create_loader_naming_the_fields(tiny_data, change, fields):
    with pytest.raises(ConfigError, match=fields.replace(".", r"\.")):
        change = dict(change)
        create_loader(cfg_for(change.pop("data", tiny_data), **change))


def test_from_timm_model_takes_size_mean_std_and_interpolation():
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    cfg = LoaderConfig.from_timm_model(model, data="x", batch_size=4)
    assert cfg.image_size == 224 and cfg.batch_size == 4 and cfg.data == "x"
    assert cfg.output.mean == pytest.approx((0.5, 0.5, 0.5)) and cfg.augment.interpolation == "bicubic"
    assert cfg.eval.crop_pct == pytest.approx(0.9)


def test_kernels_follow_the_knobs_lowpass_crop_and_patch_erasing(tiny_data):
    sched = ScheduleConfig(kwargs=dict(lowpass_size=16, erase_ratio=0.25))
    loader = create_loader(cfg_for(tiny_data, augment=dataclasses.replace(FULL_VIEW, patch_size=8), schedule=sched))
    try:
        b = next(iter(loader))
        assert b.knobs.lowpass_size == 16 and b.images.shape == (8, 3, 16, 16)
        cells = b.images.float().unfold(2, 8, 8).unfold(3, 8, 8)          # (B, 3, 2, 2, 8, 8)
        erased = (cells == 0).flatten(-2).all(-1).all(1)                  # (B, 2, 2)
        assert erased.flatten(1).sum(1).tolist() == [1] * 8               # round(0.25 * 4) cells each
    finally:
        loader.close()


def test_a_lanczos_step_delivers_the_full_size_batch_resized_as_efficienttrain_pp_does(tiny_data):
    from vitdata import kernels

    batches = {}
    for name, kw in (("full", {}), ("lanczos", dict(lowpass_size=16, lowpass_filter="lanczos"))):
        loader = create_loader(cfg_for(tiny_data, augment=FULL_VIEW, schedule=ScheduleConfig(kwargs=kw)))
        try:
            batches[name] = next(iter(loader))
        finally:
            loader.close()
    full, low = batches["full"], batches["lanczos"]
    assert low.knobs.lowpass_filter == "lanczos" and low.images.shape[-2:] == (16, 16)
    assert full.ids.tolist() == low.ids.tolist()
    torch.testing.assert_close(low.images.float(), kernels.lanczos_resize(full.images.float(), 16),
                               atol=1e-4, rtol=1e-4)


def test_loader_state_carries_the_oracle_and_restores_it(tmp_path):
    from vitdata.data import selfid
    from vitdata.oracle.difficulty import DifficultyOracle

    selfid.write_shards(str(tmp_path / "d"), 48, num_classes=4, size=32, per_shard=48)
    cfg = LoaderConfig(data=str(tmp_path / "d"), batch_size=8, image_size=32, backend="torch", num_workers=0)
    oracle = DifficultyOracle(48, policy="weighted")
    loader = create_loader(cfg, oracle=oracle)
    loader.set_epoch(0)
    for batch in loader:
        loader.report(batch.ids, torch.rand(len(batch.ids)))
    state = loader.state_dict()
    assert state["oracle"] is not None
    fresh = DifficultyOracle(48, policy="weighted")
    other = create_loader(cfg, oracle=fresh)
    other.load_state_dict(state)
    assert fresh.table_digest() == oracle.table_digest()
    loader.set_epoch(1)
    other.set_epoch(1)
    assert [b.ids.tolist() for b in loader] == [b.ids.tolist() for b in other]
    loader.close()
    other.close()


def test_from_timm_model_uses_the_models_own_size_and_keeps_its_mean_under_nested_overrides():
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=64, depth=1)
    model.pretrained_cfg = dict(model.pretrained_cfg, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    cfg = LoaderConfig.from_timm_model(model, output=OutputConfig(dtype="bfloat16", channels_last=True))
    assert cfg.image_size == 64 and cfg.augment.patch_size == 16
    assert cfg.output.dtype == "bfloat16" and cfg.output.channels_last
    assert cfg.output.mean == (0.5, 0.5, 0.5) and cfg.output.std == (0.25, 0.25, 0.25)


def test_from_timm_model_keeps_a_mean_given_explicitly_even_when_it_equals_the_default():
    import timm

    from vitdata.loader.config import IMAGENET_MEAN

    model = timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=4, depth=1)
    clip_mean = tuple(float(x) for x in model.pretrained_cfg["mean"])
    assert clip_mean != IMAGENET_MEAN
    assert LoaderConfig.from_timm_model(model).output.mean == clip_mean
    cfg = LoaderConfig.from_timm_model(model, output=OutputConfig(mean=IMAGENET_MEAN))
    assert cfg.output.mean == IMAGENET_MEAN                       # given, so kept
    assert cfg.output.std == tuple(float(x) for x in model.pretrained_cfg["std"])   # not given: the model's


def test_eval_data_lives_in_eval_config_and_the_old_spelling_is_a_deprecated_alias(tiny_data, tmp_path):
    from vitdata.data import selfid

    other = str(tmp_path / "val")
    selfid.write_imagefolder(other, 8, num_classes=4, size=32)
    loader = create_loader(cfg_for(tiny_data, backend="torch", num_workers=0, eval=EvalConfig(data=other)),
                           split="eval")
    assert len(loader.index) == 8
    loader.close()
    with pytest.warns(DeprecationWarning, match="eval=EvalConfig"):
        loader = create_loader(cfg_for(tiny_data, backend="torch", num_workers=0, eval_data=other), split="eval")
    assert len(loader.index) == 8 and loader.cfg.eval.data == other
    loader.close()
    with pytest.raises(ConfigError) as e:
        create_loader(cfg_for(tiny_data, eval_data=other, eval=EvalConfig(data=tiny_data)), split="eval")
    assert set(e.value.fields) == {"eval_data", "eval.data"}


def test_named_schedules_round_every_size_to_the_patch_grid(tmp_path):
    from vitdata.data import selfid

    selfid.write_shards(str(tmp_path / "d"), 32, num_classes=2, size=32, per_shard=32)
    # 96 px: 160/224 and 192/224 of it (68.6, 82.3) would not tile and round to 64 and 80. At 64 px both
    # stages would round to 48, and that merge is refused (docs/methods.md §3.2, tests/curriculum/test_fidelity.py).
    cfg = LoaderConfig(data=str(tmp_path / "d"), batch_size=8, image_size=96, backend="torch", num_workers=0,
                       augment=AugmentConfig(patch_size=16), schedule=ScheduleConfig(name="efficienttrain", epochs=5))
    loader = create_loader(cfg)
    sizes = {loader.schedule(e, 0).lowpass_size for e in range(5)} - {None}
    assert sizes == {64, 80}
    loader.close()


@pytest.mark.parametrize("backend", ["dali-inline", "torch"])
def test_a_state_saved_after_a_world_size_change_resumes_the_same_tail(tiny_data, backend):
    from vitdata.loader.config import DistributedConfig

    two = create_loader(cfg_for(tiny_data, backend, batch_size=4, augment=FULL_VIEW,
                                distributed=DistributedConfig(rank=0, world_size=2)))
    it = iter(two)
    next(it)
    state = two.state_dict()
    two.close()

    def one():
        return create_loader(cfg_for(tiny_data, backend, batch_size=8, augment=FULL_VIEW,
                                     distributed=DistributedConfig(rank=0, world_size=1)))

    elastic = one()
    elastic.load_state_dict(state)       # world 2 -> 1: the pipeline's epoch begins at step 1
    it = iter(elastic)
    next(it)
    saved = elastic.state_dict()         # mid-epoch, from that pipeline
    tail = [b.ids.tolist() for b in it]
    resumed = one()
    resumed.load_state_dict(saved)
    assert len(tail) == len(resumed) - 2 and [b.ids.tolist() for b in resumed] == tail
    elastic.close()
    resumed.close()
