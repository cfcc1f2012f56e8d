"""Levels (vitdata.decode.levels): what gets a level, the store's layout and checks, the factor rule, the
window mapped into a level, and the stated pixel tolerance against a full decode + the same resize
(generated photos here, the real ones where ../shared/data is present)."""
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitdata.decode import CropBox, crop_rng, decode_rgb, probe, sample_crop_box, scaled_box
from vitdata.decode.levels import FACTORS, Levels, build_levels, encode_levels, open_levels, store_dir

from .conftest import photo

# 0..255 scale, mean over the photos that take a level (docs/design.md, "Decoding at the step's size")
MEAN_TOL = 2.0
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "imagenet-samples"


def _png(w, h):
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo(w, h))).save(buf, "PNG")
    return buf.getvalue()


def _gray(w, h):
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo(w, h))).convert("L").save(buf, "JPEG")
    return buf.getvalue()


def test_a_plain_jpeg_gets_each_level_at_the_reduced_idct_size_and_others_get_none():
    levels = encode_levels(photo(333, 250, 1))
    for f, jpeg in zip(FACTORS, levels):
        im = Image.open(io.BytesIO(jpeg))
        assert im.format == "JPEG" and im.mode == "RGB"
        assert im.size == (-(-333 // f), -(-250 // f))     # ceil(W / f): what libjpeg's 1/f IDCT gives
    cut = photo(333, 250, 2)[:3000]
    for data in (None, _png(333, 250), _gray(333, 250), cut, b"not an image"):
        assert encode_levels(data) == [None] * len(FACTORS)
    small = encode_levels(photo(40, 36, 3))                   # a 1/4 level would be 10 px across
    assert small[FACTORS.index(4)] is None and small[FACTORS.index(2)] is not None


def _store(tmp_path, datas, fp="ab" * 32):
    return build_levels(iter(datas), len(datas), str(tmp_path), fp)


def test_the_store_holds_each_level_by_id_and_names_itself_by_the_fingerprint(tmp_path):
    datas = [photo(320, 240, k) for k in range(3)] + [_png(320, 240), None]
    path = _store(tmp_path, datas)
    assert path == store_dir(str(tmp_path), "ab" * 32) and os.path.basename(path) == "levels-" + "ab" * 8
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]          # written aside, renamed into place
    meta = json.loads(Path(path, "meta.json").read_text())
    assert meta["samples"] == 5 and meta["with_level"] == {"8": 3, "4": 3, "2": 3}
    store = Levels(path, "ab" * 32, 5)
    for i in range(3):
        for f, jpeg in zip(FACTORS, encode_levels(datas[i])):
            assert store.data(i, f) == jpeg and tuple(store.sizes[f][i]) == Image.open(io.BytesIO(jpeg)).size
    big = CropBox(0, 0, 320, 240)
    assert [store.factor(i, big, 50) for i in range(5)] == [4, 4, 4, 1, 1]   # no level: the photo
    assert _store(tmp_path, datas[:1]) == path                               # a whole store is kept
    with pytest.raises(ValueError, match="another index"):
        Levels(path, "cd" * 32)
    with pytest.raises(ValueError, match="5 samples"):
        Levels(path, "ab" * 32, 6)
    with pytest.raises(FileNotFoundError):
        Levels(str(tmp_path / "nothing"))
    blob = Path(path, "level-2.bin")
    whole = blob.read_bytes()
    blob.write_bytes(whole[:-100])                                          # a cut blob: refused on open
    with pytest.raises(ValueError, match="damaged store"):
        Levels(path)
    blob.write_bytes(whole)
    with pytest.raises(ValueError, match="2 samples given"):
        build_levels(iter(datas[:2]), 3, str(tmp_path / "other"), "ef" * 32)
    assert os.listdir(tmp_path / "other") == []                             # a failed build leaves nothing


def test_a_store_reads_the_factors_it_was_built_with(tmp_path, monkeypatch):
    import vitdata.decode.levels as lv

    monkeypatch.setattr(lv, "FACTORS", (4, 2))          # a store built before the 1/8 level existed
    data = photo(800, 800, 0)
    path = _store(tmp_path, [data])
    monkeypatch.undo()
    store = Levels(path)
    assert store.factors == (4, 2)
    assert store.factor(0, CropBox(0, 0, 800, 800), 100) == 4
    assert store.data(0, 4) == encode_levels(data)[FACTORS.index(4)]


@pytest.mark.parametrize("w,h,size,expect", [(400, 400, 100, 4), (399, 400, 100, 2), (400, 199, 100, 1),
                                             (200, 200, 100, 2), (199, 300, 100, 1), (800, 800, 100, 8),
                                             (799, 800, 100, 4)])
def test_the_factor_is_the_largest_stored_level_that_keeps_the_window_at_least_the_output_across(tmp_path, w, h,
                                                                                               size, expect):
    store = open_levels(_store(tmp_path, [photo(800, 800, 0)]))
    assert store.factor(0, CropBox(0, 0, w, h), size) == expect


def test_the_window_in_a_level_is_the_photos_window_divided_by_the_factor(tmp_path):
    data = photo(333, 250, 4)
    store = Levels(_store(tmp_path, [data]))
    rng = np.random.default_rng(0)
    for _ in range(200):
        box = sample_crop_box(333, 250, (0.08, 1.0), (3 / 4, 4 / 3), crop_rng(int(rng.integers(99)), 0, 0, 1))
        for f in FACTORS:
            (x, y), (w, h), (top, left, bottom, right) = store.cut(0, f, box)
            lw, lh = store.sizes[f][0]
            assert 0 <= x and 0 <= y and x + w <= lw and y + h <= lh            # whole level pixels
            assert (x + left, y + top) == pytest.approx((box.x / f, box.y / f))
            assert (x + right, y + bottom) == pytest.approx(((box.x + box.w) / f, (box.y + box.h) / f))


def _mad(datas, sizes, factors=FACTORS):
    """Mean absolute difference (0..255) per photo that takes a level (one of ``factors``): the level's window
    resized against the photo's full decode resized from the same window (Pillow, bilinear)."""
    levels = [encode_levels(d) for d in datas]
    out = {}
    for size in sizes:
        diffs = []
        for i, d in enumerate(datas):
            head = probe(d)
            box = sample_crop_box(head.width, head.height, (0.08, 1.0), (3 / 4, 4 / 3), crop_rng(0, 0, 0, i))
            f = next((f for k, f in enumerate(FACTORS) if levels[i][k] and box.w >= f * size and box.h >= f * size), 1)
            if f not in factors:
                continue
            full = decode_rgb(d).resize((size, size), Image.BILINEAR, box=scaled_box(box, 1))
            level = decode_rgb(levels[i][FACTORS.index(f)]).resize((size, size), Image.BILINEAR, box=scaled_box(box, f))
            diffs.append(np.abs(np.asarray(level, np.float32) - np.asarray(full, np.float32)).mean())
        out[size] = np.array(diffs)
    return out


def test_a_level_reads_the_same_window_as_the_full_decode_within_the_tolerance():
    datas = [photo(480, 360, k) for k in range(24)]
    for size, d in _mad(datas, (48, 96)).items():
        assert len(d) >= 8, size
        assert d.mean() <= MEAN_TOL and d.max() <= 12.0, (size, d.mean(), d.max())
        assert d.mean() > 0.05          # the level really was read


def test_the_eighth_level_of_a_multi_megapixel_photo_is_within_the_tolerance():
    datas = [photo(1600, 1200, k) for k in range(16)]
    (d,) = _mad(datas, (48,), factors=(8,)).values()
    assert len(d) >= 6
    assert d.mean() <= MEAN_TOL and d.max() <= 12.0, (d.mean(), d.max())
    assert d.mean() > 0.05


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/imagenet-samples")
def test_on_real_photos_the_mean_difference_is_within_the_tolerance():
    datas = [p.read_bytes() for p in sorted(SHARED.glob("*/*.JPEG"))[:200]]
    for size, d in _mad(datas, (64, 112, 160)).items():
        assert len(d) >= 20, size
        assert d.mean() <= MEAN_TOL and d.max() <= 12.0, (size, d.mean(), d.max())
