"""The low-pass crop in one pass: with low-pass steps in the schedule, DALI delivers uint8 and the loader's
kernel crops, normalises and writes the output dtype and layout at once.

The old path (DALI normalises to float32, the crop runs in float32, a cast follows) is rebuilt here by
turning the schedule check off (``vitdata.loader._uses_lowpass``); both graphs draw the same random
numbers, so the uint8 pixels before normalisation are the same and the two outputs differ by rounding only.
"""
import dataclasses

import pytest
import torch

import vitdata.loader.loader as loader_mod
from vitdata import create_loader, kernels
from vitdata.loader.config import AugmentConfig, OutputConfig, ScheduleConfig
from vitdata.curriculum.schedule import EpochTable, Schedule

from .test_loader import cfg_for, run_epochs

RANDAUG = AugmentConfig(patch_size=8)
MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def _spy(monkeypatch, calls):
    real = kernels.lowpass_crop

    def spy(x, size, **kw):
        y = real(x, size, **kw)
        calls.append((x.clone(), size, kw, y))
        return y

    monkeypatch.setattr(kernels, "lowpass_crop", spy)


def _cfg(data, dtype, channels_last, **kw):
    kw.setdefault("schedule", ScheduleConfig(kwargs=dict(lowpass_size=16)))
    return cfg_for(data, "dali-inline", augment=RANDAUG, output=OutputConfig(dtype=dtype, channels_last=channels_last),
                   **kw)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_one_pass_images_equal_the_normalise_crop_cast_path_within_twice_the_references_error(
        tiny_data, monkeypatch, dtype, channels_last):
    out_dtype = getattr(torch, dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    calls = []
    _spy(monkeypatch, calls)
    new = create_loader(_cfg(tiny_data, dtype, channels_last))
    assert new.graph_spec.normalize is False
    got = [b.images.clone() for _, b in zip(range(3), new)]
    new.close()
    captured = [c[0] for c in calls]
    assert len(captured) == 3 and all(u.dtype == torch.uint8 for u in captured)

    monkeypatch.setattr(loader_mod, "_uses_lowpass", lambda schedule: False)
    old = create_loader(_cfg(tiny_data, dtype, channels_last))
    assert old.graph_spec.normalize is True
    want = [b.images.clone() for _, b in zip(range(3), old)]
    old.close()

    for u8, y_new, y_old in zip(captured, got, want):
        assert y_new.dtype == out_dtype and y_new.shape == (8, 3, 16, 16)
        assert y_new.is_contiguous(memory_format=fmt) and y_old.is_contiguous(memory_format=fmt)
        kw = dict(mean=MEAN, std=STD, memory_format=fmt)
        exact = kernels.lowpass_crop_ref(u8, 16, out_dtype=torch.float64, **kw)
        # the reference's own low-precision error: torch's float32 paths ending in the output dtype
        low = [kernels.lowpass_crop_fft(u8, 16, out_dtype=out_dtype, **kw),
               kernels.lowpass_crop_matmul(u8, 16, out_dtype=out_dtype, **kw), y_old]
        bound = 2 * max((y.double() - exact).abs().max().item() for y in low) + 1e-12
        assert (y_new.double() - exact).abs().max().item() <= bound
        assert (y_new.double() - y_old.double()).abs().max().item() <= bound


def test_a_low_pass_step_calls_the_kernel_once_on_uint8_with_the_output_dtype_and_no_cast_follows(
        tiny_data, monkeypatch):
    calls = []
    _spy(monkeypatch, calls)
    loader = create_loader(_cfg(tiny_data, "bfloat16", True))
    try:
        b = next(iter(loader))
    finally:
        loader.close()
    assert len(calls) == 1
    x, size, kw, y = calls[0]
    assert x.dtype == torch.uint8 and size == 16
    assert kw["out_dtype"] == torch.bfloat16 and kw["memory_format"] == torch.channels_last
    assert kw["mean"] == pytest.approx(MEAN) and kw["std"] == pytest.approx(STD)
    # The batch is the kernel's own output: no .to(dtype) or layout copy after it.
    assert b.images is y or (b.images.data_ptr() == y.data_ptr() and b.images.dtype == y.dtype)


def test_on_cpu_the_kernels_run_on_the_cores_the_decoder_leaves_and_the_setting_comes_back(tiny_data, monkeypatch):
    """2 cores, DALI on 2 threads: the crop runs on one intra-op thread; the trainer's setting is restored."""
    import os

    threads_seen = []
    real = kernels.lowpass_crop
    monkeypatch.setattr(kernels, "lowpass_crop", lambda x, size, **kw: threads_seen.append(torch.get_num_threads())
                        or real(x, size, **kw))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    loader = create_loader(_cfg(tiny_data, "float32", False, num_threads=2, num_workers=0))
    try:
        next(iter(loader))
        assert threads_seen == [1] and torch.get_num_threads() == 2
    finally:
        loader.close()
        torch.set_num_threads(before)


def test_full_size_steps_of_a_low_pass_schedule_are_normalised_from_uint8_in_one_addcmul(tiny_data, monkeypatch):
    """Epoch 0 crops to 16 px, epoch 1 runs at full size: one torch.addcmul writes the output batch."""
    calls, adds = [], []
    _spy(monkeypatch, calls)
    real_addcmul = torch.addcmul

    def addcmul(*a, **kw):
        y = real_addcmul(*a, **kw)
        adds.append((a[1].dtype, y))
        return y

    monkeypatch.setattr(torch, "addcmul", addcmul)
    sched = Schedule(epochs=2, steps_per_epoch=8, image_size=32, lowpass_size=EpochTable((0, 1), (16, None)))
    aug = dataclasses.replace(RANDAUG, randaug=False, hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    loader = create_loader(cfg_for(tiny_data, "dali-inline", augment=aug, schedule=ScheduleConfig(schedule=sched),
                                   output=OutputConfig(dtype="bfloat16", channels_last=True)))
    try:
        loader.set_epoch(1)
        b = next(iter(loader))
    finally:
        loader.close()
    assert loader.graph_spec.normalize is False
    assert calls == [] and len(adds) == 1 and adds[0][0] == torch.uint8
    assert b.images.data_ptr() == adds[0][1].data_ptr() and b.images.dtype == torch.bfloat16
    assert b.images.shape == (8, 3, 32, 32) and b.images.is_contiguous(memory_format=torch.channels_last)
    # The self-identifying pixels survive the normalisation (ids and labels decode from them).
    from .conftest import decode_batch, pixel_ids

    pid = pixel_ids(loader.index)
    assert [d[0] for d in decode_batch(b.images)] == [int(pid[i]) for i in b.ids.tolist()]


def test_a_schedule_without_low_pass_steps_keeps_normalising_in_dali(tiny_data, monkeypatch):
    calls = []
    _spy(monkeypatch, calls)
    loader = create_loader(cfg_for(tiny_data, "dali-inline", augment=RANDAUG, output=OutputConfig(dtype="bfloat16")))
    try:
        b = next(iter(loader))
    finally:
        loader.close()
    assert loader.graph_spec.normalize is True and calls == []
    assert b.images.dtype == torch.bfloat16 and b.images.shape == (8, 3, 32, 32)


def test_evaluation_graph_normalises_in_dali_even_with_a_low_pass_schedule(tiny_data):
    loader = create_loader(_cfg(tiny_data, "float32", False), split="eval")
    try:
        assert loader.graph_spec.normalize is True
        assert next(iter(loader)).images.dtype == torch.float32
    finally:
        loader.close()


@pytest.mark.heavy
def test_resume_mid_epoch_with_low_pass_steps_is_bit_exact(tiny_data):
    cfg = _cfg(tiny_data, "bfloat16", True, schedule=ScheduleConfig(epochs=2, kwargs=dict(lowpass_size=16,
                                                                                        erase_ratio=0.25)))
    ref_loader = create_loader(cfg)
    ref = [(e, b.ids.clone(), b.images.clone()) for e, b in run_epochs(ref_loader, 2)]
    ref_loader.close()
    loader = create_loader(cfg)
    loader.set_epoch(0)
    got = []
    for i, b in enumerate(loader):
        got.append((0, b.ids.clone(), b.images.clone()))
        if i == 2:
            break
    state = loader.state_dict()
    loader.close()
    loader = create_loader(cfg)
    loader.load_state_dict(state)
    loader.set_epoch(0)
    got += [(0, b.ids.clone(), b.images.clone()) for b in loader]
    loader.set_epoch(1)
    got += [(1, b.ids.clone(), b.images.clone()) for b in loader]
    loader.close()
    assert len(got) == len(ref)
    for (e1, i1, x1), (e2, i2, x2) in zip(ref, got):
        assert e1 == e2 and torch.equal(i1, i2) and torch.equal(x1, x2)
