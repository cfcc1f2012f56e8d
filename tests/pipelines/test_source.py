"""The external-source callable and the header check, without building a DALI pipeline."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vitdata import DataError
from vitdata.data import selfid
from vitdata.pipelines import EpochSource, control_path, write_control
from vitdata.data.checks import check_sample, resolve_sample
from vitdata.curriculum.schedule import magnitude_to_bin
from vitdata.curriculum.schedule import NUM_MAG_BINS
from vitdata.data.checks import code_reason


def huge_png_header(width=20000, height=20000) -> bytes:
    """A valid 8x8 PNG whose IHDR claims width x height (with a correct CRC)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


class FakeIndex:
    def __init__(self, blobs):
        self.blobs = blobs
        self.label = np.arange(len(blobs), dtype=np.int64) % 4
        self.num_classes = 4

    def describe(self, i):
        return f"/fake/{i}.jpg"


class FakeReader:
    def __init__(self, blobs):
        self.blobs = blobs

    def read(self, i):
        if self.blobs[i] is None:
            raise DataError("missing", f"/fake/{i}.jpg", sample_id=i, detail="file not found")
        return self.blobs[i]


def make(blobs):
    return FakeReader(blobs), FakeIndex(blobs)


GOOD = selfid.encode(selfid.make_image(1, 1, 16))


@pytest.mark.parametrize("blob, reason", [
    (b"<html>not an image</html>", "unsupported_format"),
    (b"", "truncated"),
    (gif_bytes(), "unsupported_format"),
    (huge_png_header(), "too_many_pixels"),
    (None, "missing"),
])
def test_the_header_check_names_the_reason_without_decoding(blob, reason):
    reader, index = make([GOOD, blob])
    assert check_sample(reader, index, 0, 64_000_000)[1] is None
    data, got, _ = check_sample(reader, index, 1, 64_000_000)
    assert data is None and got == reason


def test_the_pixel_budget_is_configurable():
    buf = io.BytesIO()
    Image.new("RGB", (100, 100)).save(buf, format="PNG")   # a real one: an 8x8 claiming 100x100 lacks image data
    reader, index = make([buf.getvalue()])
    assert check_sample(reader, index, 0, 10_000)[1] is None
    assert check_sample(reader, index, 0, 9_999)[1] == "too_many_pixels"


def test_a_bad_sample_is_replaced_by_the_next_usable_id_of_the_epoch_order():
    blobs = [GOOD, b"junk", b"junk", GOOD, GOOD]
    reader, index = make(blobs)
    ids = np.array([1, 2, 4, 0, 3])
    sid, status, data = resolve_sample(reader, index, ids, 0, 64_000_000)
    assert sid == 4 and code_reason(status) == "unsupported_format" and data == GOOD
    assert resolve_sample(reader, index, ids, 1, 64_000_000)[0] == 4   # deterministic, same rule
    assert resolve_sample(reader, index, ids, 3, 64_000_000)[:2] == (0, 0)
    with pytest.raises(DataError, match=r"unsupported_format.*sample 1"):
        resolve_sample(*make([b"junk", b"junk"]), np.array([1, 0]), 0, 64_000_000)


def test_magnitudes_map_to_bins_on_timm_scale():
    assert magnitude_to_bin(0.0) == 0 and magnitude_to_bin(10.0) == NUM_MAG_BINS - 1
    assert magnitude_to_bin(4.5) == 45 and magnitude_to_bin(42.0) == NUM_MAG_BINS - 1 and magnitude_to_bin(-1) == 0


class Info:
    def __init__(self, idx, epoch=0):
        self.idx_in_epoch, self.epoch_idx, self.iteration, self.idx_in_batch = idx, epoch, idx // 2, idx % 2


def test_the_source_is_a_pure_function_of_the_control_file_and_position(tmp_path):
    import pickle

    blobs = [selfid.encode(selfid.make_image(i, i % 4, 16)) for i in range(6)]
    reader, index = make(blobs)
    control = {"epoch": np.array(3), "ids": np.array([5, 2, 0, 1], np.int64),
               "step_size": np.array([16, 24], np.int32), "step_magnitude": np.array([2.0, 9.0], np.float32),
               "step_num_ops": np.array([1, 2], np.int32), "extra_magnitude": np.array([0, 0, 0.5, 3], np.float32)}
    write_control(control_path(str(tmp_path), 0), control)
    src = pickle.loads(pickle.dumps(EpochSource(reader, index, str(tmp_path), 2, 2, 64_000_000)))
    enc, label, sid, orig, status, size, mag, active = src(Info(2))
    assert bytes(enc) == blobs[0] and int(sid) == int(orig) == 0 and int(label) == 0 and int(status) == 0
    assert size.tolist() == [24.0, 24.0] and mag.tolist() == [95, 95] and active.tolist() == [1, 1]
    assert src(Info(1))[7].tolist() == [1, 0]           # step 0 has one op
    assert src(Info(3))[6].tolist() == [100, 100]       # 9 + 3 clipped to 10
    with pytest.raises(StopIteration):
        src(Info(4))


def test_the_header_walk_reads_the_same_size_as_pillow(imagenet_samples):
    # The check reads the size from the JPEG frame header / PNG IHDR itself; Pillow is the reference.
    from vitdata.data.checks import _jpeg_size, _png_size

    paths = sorted(p for p in imagenet_samples.rglob("*") if p.is_file())
    extra = []
    for mode, fmt, kw in (("RGB", "JPEG", dict(progressive=True)), ("CMYK", "JPEG", {}), ("L", "JPEG", {}),
                          ("RGBA", "PNG", {}), ("P", "PNG", {})):
        buf = io.BytesIO()
        Image.new(mode, (37, 23)).save(buf, format=fmt, **kw)
        extra.append(buf.getvalue())
    blobs = [p.read_bytes() for p in paths] + extra
    for blob in blobs:
        size, why = (_png_size if blob[:4] == b"\x89PNG" else _jpeg_size)(blob)
        assert why is None and size == Image.open(io.BytesIO(blob)).size
    fill = GOOD[:2] + b"\xff\xff\xff" + GOOD[2:]   # fill bytes before a marker are legal
    assert _jpeg_size(fill) == (Image.open(io.BytesIO(GOOD)).size, None)
    print(f"\nheader walk: {len(blobs)} files, sizes equal to Pillow's")


def test_a_data_error_in_a_source_worker_is_recorded_by_field_for_the_main_process(tmp_path):
    # DALI hands the main process only the text of a worker's exception: the source records the error's
    # fields beside the control file, and the loader rebuilds the DataError from them, not from text.
    import pickle

    from vitdata.pipelines.source import read_error_records

    blobs = [None, b"", None]               # every id missing or empty: no usable substitute
    reader, index = make(blobs)
    control = {"epoch": np.array(0), "ids": np.array([1, 0, 2, 1], np.int64),
               "step_size": np.array([16, 16], np.int32), "step_magnitude": np.zeros(2, np.float32),
               "step_num_ops": np.zeros(2, np.int32), "extra_magnitude": np.zeros(4, np.float32)}
    write_control(control_path(str(tmp_path), 0), control)
    src = pickle.loads(pickle.dumps(EpochSource(reader, index, str(tmp_path), 2, 2, 64_000_000)))
    with pytest.raises(DataError) as raised:
        src(Info(2))
    ((pos, err),) = read_error_records(str(tmp_path), 0)
    assert pos == 2 and isinstance(err, DataError)
    assert (err.reason, err.path, err.sample_id, err.detail) == (raised.value.reason, raised.value.path,
                                                                 raised.value.sample_id, raised.value.detail)
    assert err.sample_id == 2 and err.reason == "missing"
    assert read_error_records(str(tmp_path), 1) == []


def test_the_source_draws_the_same_window_with_or_without_the_reduced_decode(tmp_path):
    import pickle

    from vitdata.pipelines.source import CROP_OUTPUTS, OUTPUTS, SCALED_OUTPUTS, CropSpec

    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).resize((320, 240))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    blobs = [buf.getvalue(), selfid.encode(selfid.make_image(1, 1, 16), "png")]
    reader, index = make(blobs)
    control = {"epoch": np.array(2), "ids": np.array([0, 1, 0, 1], np.int64),
               "step_size": np.array([16, 16], np.int32), "step_magnitude": np.zeros(2, np.float32),
               "step_num_ops": np.zeros(2, np.int32), "extra_magnitude": np.zeros(4, np.float32)}
    write_control(control_path(str(tmp_path), 0), control)
    names = OUTPUTS[:6] + CROP_OUTPUTS + SCALED_OUTPUTS
    got = {}
    for on in (False, True):
        crop = CropSpec((0.5, 1.0), (3 / 4, 4 / 3), seed=1, rank=0, decode_scale=on)
        src = pickle.loads(pickle.dumps(EpochSource(reader, index, str(tmp_path), 2, 2, 64_000_000, names, crop)))
        got[on] = [dict(zip(names, src(Info(k)))) for k in range(4)]
    for off, on in zip(got[False], got[True]):
        assert off["anchor"].tolist() == on["anchor"].tolist() and off["shape"].tolist() == on["shape"].tolist()
        assert int(off["decoded"]) == 0 and bytes(off["encoded"]) in blobs
    jpeg, png = got[True][0], got[True][1]
    assert int(jpeg["decoded"]) == 1 and jpeg["encoded"].size == int(np.prod(jpeg["hwc"]))   # pixels, flattened
    assert int(jpeg["hwc"][0]) >= 16 and int(jpeg["hwc"][1]) >= 16        # never smaller than the output
    assert int(png["decoded"]) == 0 and bytes(png["encoded"]) == blobs[1]  # not a JPEG: DALI decodes it
    # positions 0 and 2 hold the same sample, in different places of the epoch: different windows
    assert got[True][0]["anchor"].tolist() != got[True][2]["anchor"].tolist() or \
        got[True][0]["shape"].tolist() != got[True][2]["shape"].tolist()
