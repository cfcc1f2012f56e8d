"""JPEGs that libjpeg refuses from their marker segments alone are refused by the structure walk as
``decode_error`` with libjpeg's words, before any decoder; the corpus is checked against DALI's CPU decoder
and Pillow, and files both decode are not flagged."""
import io

import pytest
from PIL import Image

import jpegfatal
from vitdata.data.checks import check_bytes


def _pillow(data: bytes):
    with Image.open(io.BytesIO(data)) as im:
        im.convert("RGB").load()


@pytest.mark.parametrize("kind", sorted(jpegfatal.KINDS))
def test_a_header_fatal_jpeg_is_refused_as_decode_error_in_libjpegs_words(kind):
    out, reason, detail = check_bytes(jpegfatal.make(kind, 5, 1), 64_000_000)
    assert out is None and reason == "decode_error"
    assert detail.startswith(jpegfatal.KINDS[kind]) and "read from the headers" in detail


@pytest.mark.parametrize("kind", sorted(jpegfatal.KINDS))
def test_dalis_decoder_and_pillow_both_refuse_each_header_fatal_kind_in_the_same_words(kind, dali_decode, capfd):
    data = jpegfatal.make(kind, 5, 1)
    with pytest.raises(Exception):
        dali_decode(data)
    if kind not in jpegfatal.SILENT:
        assert jpegfatal.KINDS[kind] in capfd.readouterr().err    # libjpeg's message, on the process's stderr
    else:   # no words to show the refusal was this file's: the same pipeline decodes a good file next
        dali_decode(jpegfatal.make("unused_bad_tables", 5, 1))
    with pytest.raises((OSError, SyntaxError)):
        _pillow(data)


@pytest.mark.parametrize("kind", jpegfatal.ACCEPTED)
def test_near_misses_that_both_decoders_accept_are_not_flagged(kind, dali_decode):
    data = jpegfatal.make(kind, 5, 1)
    assert check_bytes(data, 64_000_000) == (data, None, "")
    dali_decode(data)
    _pillow(data)


def test_no_shared_photo_and_no_encoder_setting_is_flagged(imagenet_samples):
    from vitdata.data import selfid

    blobs = [p.read_bytes() for p in sorted(imagenet_samples.rglob("*")) if p.is_file()]
    img = Image.fromarray(selfid.make_image(3, 1, 64))
    for kw in ({}, {"progressive": True}, {"optimize": True}, {"subsampling": 0}, {"subsampling": 1},
               {"restart_marker_blocks": 1}, {"quality": 20}):
        buf = io.BytesIO()
        img.save(buf, "JPEG", **kw)
        blobs.append(buf.getvalue())
    for mode in ("L", "CMYK"):
        buf = io.BytesIO()
        img.convert(mode).save(buf, "JPEG", progressive=True)
        blobs.append(buf.getvalue())
    assert len(blobs) > 400
    flagged = [(k, check_bytes(b, 1 << 40)[1:]) for k, b in enumerate(blobs) if check_bytes(b, 1 << 40)[1] is not None]
    assert not flagged
