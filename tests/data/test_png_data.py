"""PNGs whose chunks and CRCs are sound but whose image data libpng refuses are refused by the sample checks
as ``decode_error`` in libpng's words, before any decoder (``vitdata.data.pngdata``); the corpus is checked
against DALI's CPU decoder and Pillow, sound PNGs of every colour type, depth and interlace are not flagged,
and a DALI loader meets them as substitutions, never as a failed step."""
import io

import numpy as np
import pytest
from PIL import Image

import pngfatal
from vitdata.data import pngdata
from vitdata.data.checks import check_bytes


def _pillow(data: bytes):
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("kind", sorted(pngfatal.KINDS))
def test_a_png_libpng_refuses_is_a_decode_error_in_its_words_and_only_with_the_data_check(kind):
    data = pngfatal.make(kind, 5, 1)
    out, reason, detail = check_bytes(data, 64_000_000)
    assert out is None and reason == "decode_error" and detail.startswith("libpng would refuse it: ")
    assert pngfatal.KINDS[kind] in detail
    assert check_bytes(data, 64_000_000, png_data=False) == (data, None, "")   # headers and CRCs are sound


@pytest.mark.parametrize("kind", sorted(pngfatal.KINDS))
def test_dalis_decoder_refuses_each_kind_and_pillow_all_but_the_lenient_four(kind, dali_decode, capfd):
    data = pngfatal.make(kind, 5, 1)
    with pytest.raises(Exception):
        dali_decode(data)
    if pngfatal.KINDS[kind]:
        assert pngfatal.KINDS[kind] in capfd.readouterr().err    # libpng's message, on the process's stderr
    if kind in pngfatal.PILLOW_DECODES:
        _pillow(data)
    else:
        with pytest.raises((OSError, SyntaxError, ValueError)):
            _pillow(data)


@pytest.mark.parametrize("kind", pngfatal.ACCEPTED)
def test_near_misses_that_both_decoders_accept_are_not_flagged(kind, dali_decode):
    data = pngfatal.make(kind, 5, 1)
    assert check_bytes(data, 64_000_000) == (data, None, "")
    assert np.array_equal(dali_decode(data), _pillow(data))


@pytest.mark.parametrize("colour,depth,interlace", [(0, 1, 0), (0, 2, 0), (0, 4, 0), (0, 8, 0), (0, 16, 0),
                                                    (2, 8, 0), (2, 16, 0), (3, 1, 0), (3, 2, 0), (3, 4, 0),
                                                    (3, 8, 0), (4, 8, 0), (4, 16, 0), (6, 8, 0), (6, 16, 0),
                                                    (0, 8, 1), (2, 8, 1), (2, 16, 1), (3, 8, 1), (6, 8, 1)])
def test_sound_pngs_of_every_colour_type_depth_and_interlace_pass_and_decode(colour, depth, interlace, dali_decode):
    data = pngfatal.good(colour, depth, interlace)
    assert check_bytes(data, 64_000_000) == (data, None, "")
    dali_decode(data)
    _pillow(data)


def test_an_interlaced_image_whose_passes_have_no_pixels_is_sized_right(dali_decode):
    for size in (1, 2, 3, 5):   # Adam7 passes 2.. are empty or partial at these sizes
        img = np.arange(size * size * 3, dtype=np.uint8).reshape(size, size, 3)
        data = pngfatal.build([(b"IHDR", pngfatal.struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 1)),
                               (b"IDAT", pngfatal.zlib.compress(pngfatal.adam7(img))), (b"IEND", b"")])
        assert check_bytes(data, 64_000_000)[1] is None, size
        assert np.array_equal(dali_decode(data), img), size


def test_the_shared_photos_as_pngs_pass(imagenet_samples, dali_decode):
    for f in sorted(imagenet_samples.glob("*/*.JPEG"))[::40]:
        with Image.open(f) as im:
            data = pngfatal.pillow_png(np.asarray(im.convert("RGB")))
        assert check_bytes(data, 64_000_000)[1] is None, f


def test_a_sound_file_is_inflated_once_per_process(monkeypatch):
    data = pngfatal.pillow_png(np.random.default_rng(1).integers(0, 256, (33, 31, 3), dtype=np.uint8))
    calls = []
    real = pngdata.zlib.decompressobj
    monkeypatch.setattr(pngdata.zlib, "decompressobj", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(pngdata, "_sound", set())
    for _ in range(3):
        assert check_bytes(data, 64_000_000)[1] is None
    assert len(calls) == 1
    bad = pngfatal.make("filter_byte_7", 2, 0)
    for _ in range(2):   # a refused file is inflated again each time: it is skipped, or quarantined upstream
        assert check_bytes(bad, 64_000_000)[1] == "decode_error"
    assert len(calls) == 3


def test_a_large_png_is_checked_in_bounded_memory():
    """A 6000x6000 RGB PNG (108 MB of rows) is inflated in 1 MB pieces, never whole."""
    import tracemalloc

    rows = b"".join(b"\0" + bytes(18000) for _ in range(6000))
    data = pngfatal.build([(b"IHDR", pngfatal.struct.pack(">IIBBBBB", 6000, 6000, 8, 2, 0, 0, 0)),
                           (b"IDAT", pngfatal.zlib.compress(rows, 9)), (b"IEND", b"")])
    del rows
    tracemalloc.start()
    assert pngdata.verify(data) is None
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, peak
