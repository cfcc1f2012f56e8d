"""LoaderConfig.decode_scale through both backends: the same samples and crop windows as with full decodes,
pixels within the stated tolerance, full decodes for the files that need them, and a bad JPEG refused and
skipped exactly as without it."""
import os

import numpy as np
import pytest
import torch
from loader_runs import assert_source_workers_match
from photos import bad_component, encoded
from PIL import Image

from vitdata import LoaderConfig, create_loader
from vitdata.loader.config import AugmentConfig

MEAN_TOL = 2.0   # 0..255 scale; see tests/decode/test_scaled.py
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def _photo(w, h, seed):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 24 + 2, w // 24 + 2, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float64)
    img = np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """16 photo-like 320x240 JPEGs in 2 classes, plus files that keep the full decode and two bad JPEGs."""
    import badinputs

    root = tmp_path_factory.mktemp("photos") / "train"
    files = {f"c{k % 2}/p{k:02d}.jpg": encoded(_photo(320, 240, k), quality=90) for k in range(16)}
    im = _photo(320, 240, 99)
    files.update({"c0/gray.jpg": encoded(im.convert("L")), "c1/cmyk.jpg": encoded(im.convert("CMYK")),
                  "c0/png.png": encoded(im, "PNG"), "c1/rotated.jpg": badinputs.make_bytes(13)})
    bad = {"c0/badcomp.jpg": bad_component(encoded(_photo(320, 240, 50))),
           "c1/cut.jpg": encoded(_photo(320, 240, 51))[:9000]}
    for rel, blob in {**files, **bad}.items():
        os.makedirs(root / os.path.dirname(rel), exist_ok=True)
        (root / rel).write_bytes(blob)
    return str(root), sorted(bad)


def _run(data, backend, decode_scale, size=24, epochs=1):
    """(images on the 0..255 scale, ids, skips, quarantine, index paths); ``decode_scale`` a mode or True/False
    for "on"/"off"."""
    mode = decode_scale if isinstance(decode_scale, str) else "on" if decode_scale else "off"
    cfg = LoaderConfig(data=data, batch_size=6, image_size=size, backend=backend, num_workers=0, num_threads=2,
                       seed=5, decode_scale=mode, augment=AugmentConfig(randaug=False, hflip=0.0, patch_size=1))
    loader = create_loader(cfg)
    out = []
    try:
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            for b in loader:
                out.append((b.images * STD, b.ids.clone()))
            skipped = sorted((r["id"], r["reason"]) for r in loader.skipped(epoch))
        names = {i: loader.index.path(i) for i in range(len(loader.index))}
        images, ids = torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
        return images, ids, skipped, sorted(loader.quarantine.ids()), names
    finally:
        loader.close()


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_decode_scale_changes_pixels_within_the_tolerance_never_samples_windows_or_skips(photos, backend):
    data, bad = photos
    on, off = _run(data, backend, True, epochs=2), _run(data, backend, False, epochs=2)
    assert torch.equal(on[1], off[1]) and on[2] == off[2] and on[3] == off[3]   # ids, skips, quarantine
    names = on[4]
    per = (on[0] - off[0]).abs().mean(dim=(1, 2, 3))
    plain = torch.tensor([os.path.basename(names[int(i)]).startswith("p") for i in on[1]])
    assert per[plain].mean() <= MEAN_TOL and per[plain].max() <= 12.0
    assert per[plain].mean() > 0.05              # the plain JPEGs really took the reduced route
    assert per[~plain].max() == 0                # grayscale, CMYK, PNG, rotated: the same full decode


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_a_bad_jpeg_is_refused_and_skipped_exactly_as_with_full_decode(photos, backend):
    data, bad = photos
    on, off = _run(data, backend, True), _run(data, backend, False)
    names = on[4]
    by_name = {os.path.basename(names[i]): reason for i, reason in on[2]}
    assert by_name["cut.jpg"] == "truncated"                   # the header check, before any decoder
    assert by_name["badcomp.jpg"] == "decode_error"            # libjpeg's fatal error, read from the headers
    assert on[3] == []                                         # so no decoder refused it: nothing quarantined
    assert on[2] == off[2] and on[3] == off[3] and torch.equal(on[1], off[1])


def test_both_backends_crop_the_same_window_at_the_same_position(photos):
    data, _ = photos
    t, d = _run(data, "torch", False), _run(data, "dali", False)
    assert torch.equal(t[1], d[1])
    names = t[4]
    plain = torch.tensor([os.path.basename(names[int(i)]).startswith("p") for i in t[1]])
    # different decoders and resize kernels (Pillow vs DALI), the same window: small differences only
    assert (t[0] - d[0]).abs().mean(dim=(1, 2, 3))[plain].max() < 4.0


def test_dali_source_workers_deliver_the_same_reduced_decodes_as_the_in_thread_source(photos):
    data, _ = photos
    assert_source_workers_match(data, batch_size=6, image_size=24, decode_scale="on")


def test_auto_reduces_in_the_torch_backend_and_leaves_dali_its_roi_decode(photos):
    data, _ = photos
    auto, on, off = (_run(data, "torch", mode) for mode in ("auto", True, False))
    assert torch.equal(auto[0], on[0]) and not torch.equal(auto[0], off[0])
    dali_auto, dali_off = (_run(data, "dali", mode) for mode in ("auto", False))
    assert torch.equal(dali_auto[0], dali_off[0])
