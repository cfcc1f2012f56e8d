"""The RandAugment suite: the CPU graph's variants (contrast, auto-contrast, solarize, rotate) equal DALI's
stock ops, and the geometric ops follow the configured resampling."""
import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.auto_aug.core import select, signed_bin

from vitdata.pipelines import randaug
from vitdata.curriculum.schedule import NUM_MAG_BINS

BATCH = 8


def _photos(n=BATCH, seed=0):
    """Smooth random photos with a different range per channel (auto-contrast has work to do)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 40 + 4 * i, 48 - 2 * i
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([40 + 60 * np.sin(xx / (3 + c) + i) + 30 * np.cos(yy / (4 + c)) + 90 + 20 * c
                        for c in range(3)], -1)
        img += rng.normal(0, 6, img.shape)
        out.append(np.clip(img, 10 + 15 * (i % 3), 230).astype(np.uint8))
    out[0][:] = 77   # a flat image: auto-contrast leaves it alone, contrast keeps it
    return out


def _apply_op(name, device, images, bins, interp=types.INTERP_NN):
    ops = [op for op in randaug.suite(device=device) if op.name == name]
    assert len(ops) == 1

    @pipeline_def(enable_conditionals=True, batch_size=len(images), num_threads=1, device_id=None, seed=3)
    def pipe():
        img = fn.external_source(source=lambda: images, layout="HWC", batch=True)
        mag = fn.external_source(source=lambda: bins, batch=True)
        signed = signed_bin(mag, seed=11)
        return select(ops, 0, data=img, magnitude_bin=signed, num_magnitude_bins=NUM_MAG_BINS,
                      shape=fn.cast(img.shape()[0:2], dtype=types.FLOAT), fill_value=128, interp_type=interp)

    p = pipe()
    p.build()
    (out,) = p.run()
    return [np.array(out[i]) for i in range(len(images))]


@pytest.mark.parametrize("name", ["contrast", "auto_contrast", "solarize", "rotate"])
def test_the_cpu_variants_equal_dalis_stock_ops(name):
    images = _photos()
    bins = [np.array(b, np.int32) for b in (0, 10, 30, 50, 70, 90, 100, 45)]   # rotate: 0 to 30 degrees
    stock = _apply_op(name, "gpu", images, bins)    # "gpu" selects the stock op (it runs on CPU data too)
    fused = _apply_op(name, "cpu", images, bins)
    changed = 0
    for i, (a, b, x) in enumerate(zip(stock, fused, images)):
        assert a.shape == b.shape == x.shape
        assert np.array_equal(a, b), f"{name} sample {i}: max diff {np.abs(a.astype(int) - b).max()}"
        changed += not np.array_equal(a, x)
    if name == "auto_contrast":
        assert np.array_equal(fused[0], images[0])   # flat image: nothing to stretch
    assert changed >= BATCH - 2   # the op did something on most samples: the comparison is not vacuous


def test_cpu_suite_keeps_the_op_names_and_order():
    assert [op.name for op in randaug.suite(device="cpu")] == [op.name for op in randaug.suite(device="gpu")]


@pytest.mark.parametrize("name", ["rotate", "shear_x", "translate_y"])
def test_geometric_ops_resample_as_configured(name):
    # Nearest only moves pixels (every output value is an input value or the fill); bilinear blends them.
    images = _photos(4, seed=1)[1:]
    bins = [np.array(80, np.int32)] * len(images)
    nearest = _apply_op(name, "cpu", images, bins, types.INTERP_NN)
    bilinear = _apply_op(name, "cpu", images, bins, types.INTERP_LINEAR)
    for x, n, b in zip(images, nearest, bilinear):
        px = {tuple(p) for p in x.reshape(-1, 3)} | {(128, 128, 128)}
        assert {tuple(p) for p in n.reshape(-1, 3)} <= px
        assert len({tuple(p) for p in b.reshape(-1, 3)} - px) > 0.05 * b.shape[0] * b.shape[1]
