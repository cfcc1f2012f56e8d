"""Decoding a JPEG at the scale the step needs: the reduction rule, the same window as a full decode, the
stated resampling tolerance (generated photos here, real ones where ../shared/data is present), and the
files that keep the full decode."""
import io

import numpy as np
import pytest
from PIL import Image

from vitdata.decode import (CropBox, crop_rng, decode_region, decode_rgb, open_scaled, probe, reduction_factor,
                            sample_crop_box, scaled_box)

from .conftest import photo

# The stated tolerance (0..255 scale) of a reduced decode + resize against the full decode + the same resize:
# mean absolute difference over the photos that take the reduced route <= 2/255, and <= 12/255 for any one
# photo (the worst are finely textured photos whose reduced window is resized nearly 1:1, where the IDCT's
# filter stands alone in place of the resize's antialiasing filter).
MEAN_TOL, PHOTO_TOL = 2.0, 12.0
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def resized(data: bytes, box: CropBox, size: int, factor: int) -> np.ndarray:
    """The torch backend's route: decode (at 1/factor when factor > 1), resize the window to size x size."""
    im, f = open_scaled(data, factor) if factor > 1 else (decode_rgb(data), 1)
    return np.asarray(im.resize((size, size), Image.BILINEAR, box=scaled_box(box, f)), np.float64)


@pytest.mark.parametrize("box_w, box_h, out, expect", [
    (448, 448, 224, 2), (447, 600, 224, 1), (600, 447, 224, 1), (512, 600, 64, 8), (511, 600, 64, 4),
    (1000, 100, 64, 1), (130, 129, 64, 2), (4000, 3000, 64, 8), (224, 224, 224, 1), (16, 16, 8, 2)])
def test_the_factor_is_the_largest_that_keeps_the_window_at_least_the_output_across(box_w, box_h, out, expect):
    assert reduction_factor(box_w, box_h, out, out) == expect


def test_the_factor_rule_never_upsamples_and_never_leaves_a_larger_reduction_unused():
    rng = np.random.default_rng(0)
    for w, h, s in zip(rng.integers(1, 3000, 2000), rng.integers(1, 3000, 2000), rng.integers(8, 300, 2000)):
        r = reduction_factor(int(w), int(h), int(s), int(s))
        assert r in (1, 2, 4, 8)
        assert r == 1 or (w / r >= s and h / r >= s)
        assert r == 8 or not (w / (2 * r) >= s and h / (2 * r) >= s)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_pillow_decodes_at_exactly_the_asked_factor(factor):
    for w, h in ((640, 480), (501, 333), (97, 65)):
        im, f = open_scaled(photo(w, h, 1), factor)
        assert f == factor and im.size == (-(-w // factor), -(-h // factor)) and im.mode == "RGB"


@pytest.mark.parametrize("size", [32, 64, 112])
def test_a_reduced_decode_reads_the_same_window_as_the_full_decode_within_the_tolerance(size):
    data = photo(640, 480, 2)
    maes, shifted, factors = [], [], []
    for pos in range(40):
        box = sample_crop_box(640, 480, SCALE, RATIO, crop_rng(0, 0, 0, pos))
        r = reduction_factor(box.w, box.h, size, size)
        if r == 1:
            continue
        factors.append(r)
        full = resized(data, box, size, 1)
        maes.append(np.abs(resized(data, box, size, r) - full).mean())
        moved = box._replace(x=box.x + 8 if box.x + box.w + 8 <= 640 else box.x - 8)
        shifted.append(np.abs(resized(data, moved, size, r) - full).mean())
    assert len(maes) >= 10 and max(factors) >= 4
    assert np.mean(maes) <= MEAN_TOL and max(maes) <= PHOTO_TOL
    # the same window, not a nearby one: an 8-pixel shift costs far more than the reduced decode does
    assert np.mean(shifted) > 3 * np.mean(maes)


def test_the_raw_pixels_and_roi_handed_to_dali_hold_the_same_window():
    # decode_region cuts whole pixels around the window and gives its fractional bounds (top, left, bottom,
    # right): resizing over them reads the window the full decode would.
    data = photo(640, 480, 3)
    for pos in range(10):
        box = sample_crop_box(640, 480, SCALE, RATIO, crop_rng(1, 0, 0, pos))
        r = max(2, reduction_factor(box.w, box.h, 32, 32))
        pixels, (top, left, bottom, right) = decode_region(data, box, r)
        assert pixels.dtype == np.uint8 and pixels.shape[2] == 3
        assert 0 <= top < 1 and 0 <= left < 1 and bottom <= pixels.shape[0] and right <= pixels.shape[1]
        assert right - left == pytest.approx(box.w / r) and bottom - top == pytest.approx(box.h / r)
        via_roi = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.BILINEAR, box=(left, top, right, bottom)),
                             np.float64)
        assert np.abs(via_roi - resized(data, box, 32, r)).mean() < 1.0


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_only_plain_jpegs_are_reducible_and_the_size_is_the_one_after_exif_orientation():
    import badinputs

    rgb = Image.fromarray(np.asarray(Image.open(io.BytesIO(photo(96, 64, 4)))))
    plain = {"baseline": photo(96, 64, 4), "progressive": _encode(rgb, "JPEG", progressive=True),
             "4:4:4": photo(96, 64, 4, subsampling=0)}
    full = {"grayscale": _encode(rgb.convert("L"), "JPEG"), "cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
            "png": _encode(rgb, "PNG"), "webp": _encode(rgb, "WEBP"), "rotated": badinputs.make_bytes(13)}
    for name, data in plain.items():
        assert probe(data) == (96, 64, True), name
    for name, data in full.items():
        head = probe(data)
        assert not head.reducible, name
        assert (head.width, head.height) == decode_rgb(data).size, name
    assert probe(full["rotated"])[:2] == decode_rgb(full["rotated"]).size != Image.open(
        io.BytesIO(full["rotated"])).size   # orientation 6: stored 48 x 32, shown 32 x 48


def test_a_reduced_decode_fails_on_a_bad_jpeg_as_the_full_decode_does():
    data = bytearray(photo(320, 240, 5))
    sos = data.find(b"\xff\xda")
    data[sos + 5] = 9            # the scan names component 9, which the frame does not have
    box = CropBox(0, 0, 320, 240)
    with pytest.raises(Exception) as full:
        decode_rgb(bytes(data)).load()
    with pytest.raises(Exception) as reduced:
        decode_region(bytes(data), box, 4)
    assert type(full.value) is type(reduced.value) and str(full.value) == str(reduced.value)


def test_on_real_photos_the_reduced_decode_stays_within_the_stated_tolerance(imagenet_samples):
    blobs = [p.read_bytes() for p in sorted(imagenet_samples.rglob("*")) if p.is_file()]
    report = []
    for size in (64, 112, 160, 224):
        maes, factors = [], []
        for k, data in enumerate(blobs):
            head = probe(data)
            box = sample_crop_box(head.width, head.height, SCALE, RATIO, crop_rng(0, 0, 0, k))
            r = reduction_factor(box.w, box.h, size, size)
            if head.reducible and r > 1:
                maes.append(np.abs(resized(data, box, size, r) - resized(data, box, size, 1)).mean())
                factors.append(r)
        if maes:
            assert np.mean(maes) <= MEAN_TOL and max(maes) <= PHOTO_TOL, (size, np.mean(maes), max(maes))
        report.append(f"{size} px: {len(maes)}/{len(blobs)} reduced (1/2: {factors.count(2)}, 1/4: "
                      f"{factors.count(4)}, 1/8: {factors.count(8)}), mean abs diff "
                      f"{np.mean(maes) if maes else 0:.2f}/255, 99th percentile "
                      f"{np.percentile(maes, 99) if maes else 0:.2f}/255, worst photo {max(maes, default=0):.2f}/255")
    assert sum(int(r.split(": ")[1].split("/")[0]) for r in report) > len(blobs)   # the route is exercised
    print("\n" + "\n".join(report))
