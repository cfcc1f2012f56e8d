"""The external-source callable of the DALI graphs, and the sample check both backends share.

A DALI parallel external source runs copies of :class:`EpochSource` in worker processes, so the
callable holds no state that the main process changes while it runs. Everything that varies per
epoch (the sampler's id order, the per-step knobs, the oracle's per-sample strength) is written by
the loader into a *control file* (``ctl-<dali epoch>.npz``, atomic rename) before the pipeline reads
the first sample of that epoch; a worker loads it the first time it sees that DALI epoch index.
``SampleInfo.idx_in_epoch`` is the position in that file's order: the callable is a pure function
of (control file, position), which is what makes DALI checkpoints replay the same samples.

Per sample the callable returns (see ``OUTPUTS``):

===========  ========  =======  ==========================================================
name         dtype     shape    meaning
===========  ========  =======  ==========================================================
encoded      uint8     (L,)     the encoded image bytes (after the header check)
label        int64     ()       class index of the sample actually delivered
id           int64     ()       index position of the sample delivered (-1 for eval padding)
orig_id      int64     ()       id the sampler asked for (differs from ``id`` after a skip)
status       int32     ()       0 = ok, else 1 + position of the reason in ``errors.REASONS``
size         float32   (2,)     output (H, W) of this step (the schedule's image size)
mag_bin      int32     (n,)     RandAugment magnitude bin per op level (0..NUM_MAG_BINS-1)
active       int32     (n,)     1 where op level i < this step's number of ops, else 0
===========  ========  =======  ==========================================================
"""
from __future__ import annotations

import os
import struct
import traceback
import zlib

import numpy as np

from vitdata.errors import REASONS, DataError

from ._parent_watch import watch_parent_if_worker

OUTPUTS = ("encoded", "label", "id", "orig_id", "status", "size", "mag_bin", "active")

# Magnitudes on timm's 0..10 scale map to 101 bins, so a bin is 0.1 of timm's unit.
NUM_MAG_BINS = 101
MAX_MAGNITUDE = 10.0

# vitdata reads JPEG and PNG only (the index picks up .jpg/.jpeg/.png names); Pillow calls some camera
# JPEGs "MPO". Everything else -- GIF, WebP, BMP, TIFF named .jpg -- is refused as ``unsupported_format``
# rather than decoded by whichever decoder happens to accept it (RELIABILITY.md decision: one policy).
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG"})   # by magic bytes (a camera's MPO is a JPEG)

# How many later entries of the epoch order a skipped sample may try before giving up.
MAX_SUBSTITUTE_ATTEMPTS = 32


def magnitude_to_bin(m: np.ndarray | float) -> np.ndarray:
    """timm-scale magnitude (0..10, clipped) -> int32 bin in [0, NUM_MAG_BINS)."""
    m = np.clip(np.asarray(m, np.float64), 0.0, MAX_MAGNITUDE)
    return np.rint(m * (NUM_MAG_BINS - 1) / MAX_MAGNITUDE).astype(np.int32)


def reason_code(reason: str) -> int:
    return 1 + REASONS.index(reason)


def code_reason(code: int) -> str | None:
    return None if code == 0 else REASONS[code - 1]


def check_sample(reader, index, sample_id: int, max_pixels: int) -> tuple[bytes | None, str | None, str]:
    """Read sample ``sample_id`` and check it before any decoder sees it.

    Returns (data, None, "") when it is fine, or (None, reason, detail). Checks, in order: the bytes can be
    read (index reasons: missing, size_changed, truncated, checksum_mismatch, read_timeout); the label is
    in range (bad_label); the header names JPEG or PNG (unsupported_format) with non-zero dimensions
    within ``max_pixels`` (too_many_pixels); the file is complete (truncated: a JPEG without an end
    marker after its last scan, a PNG whose chunks stop before IEND; decode_error: a PNG chunk CRC
    mismatch). Only the header is parsed (Pillow's lazy open) and the structure walked: no pixels are
    decoded, so a 20000x20000 bomb costs microseconds.
    """
    try:
        data = reader.read(int(sample_id))
    except DataError as e:
        return None, e.reason, e.detail
    except OSError as e:
        return None, "missing", str(e)
    label = int(index.label[sample_id])
    if not 0 <= label < max(1, int(index.num_classes)):
        return None, "bad_label", f"label {label} outside [0, {index.num_classes})"
    return check_bytes(data, max_pixels)


def check_bytes(data: bytes, max_pixels: int) -> tuple[bytes | None, str | None, str]:
    """The format, size and completeness checks of :func:`check_sample` on encoded bytes.

    The format comes from the magic bytes and the size from the JPEG frame header (SOFn) or the PNG
    IHDR chunk, read by walking the marker segments: no pixels are decoded and no decoder library is
    involved (Pillow's lazy open parsed every table in Python and cost 2-3x more per photo)."""
    if not data:
        return None, "truncated", "empty file"
    if data[:2] == b"\xff\xd8":
        fmt, (w, h), why = "JPEG", *_jpeg_size(data)
    elif data[:8] == _PNG_SIG:
        fmt, (w, h), why = "PNG", *_png_size(data)
    else:
        other = _other_format(data)
        if other:
            return None, "unsupported_format", f"format {other} (vitdata reads JPEG and PNG)"
        return None, "unsupported_format", "not a JPEG or PNG (unrecognised magic bytes)"
    if why is not None:
        return None, why[0], why[1]
    if w < 1 or h < 1:
        return None, "unsupported_format", f"{fmt} header claims {w}x{h}"
    if w * h > max_pixels:
        return None, "too_many_pixels", f"{w}x{h} = {w * h / 1e6:.1f} Mpx > budget {max_pixels / 1e6:.1f} Mpx"
    reason, detail = _png_structure(data) if fmt == "PNG" else _jpeg_structure(data)
    if reason is not None:
        return None, reason, detail
    return data, None, ""


# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic): not C4 (DHT),
# C8 (reserved) or CC (DAC).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(data: bytes) -> tuple[tuple[int, int], tuple[str, str] | None]:
    """((width, height), None) from the first SOFn segment, or ((0, 0), (reason, detail))."""
    n, pos = len(data), 2
    while True:
        if pos >= n:
            return (0, 0), ("truncated", f"JPEG of {n} bytes ends before its frame header")
        if data[pos] != 0xFF:
            return (0, 0), ("unsupported_format", f"JPEG marker expected at byte {pos}, found 0x{data[pos]:02x}")
        while pos < n and data[pos] == 0xFF:   # fill bytes may precede a marker
            pos += 1
        if pos >= n:
            return (0, 0), ("truncated", f"JPEG of {n} bytes ends before its frame header")
        marker = data[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:   # TEM, RSTn, SOI: no length field
            continue
        if marker in (0xD9, 0xDA):
            return (0, 0), ("unsupported_format", f"JPEG reaches {'EOI' if marker == 0xD9 else 'a scan'} at byte "
                                                  f"{pos - 2} without a frame header")
        if pos + 2 > n:
            return (0, 0), ("truncated", f"JPEG of {n} bytes ends inside a marker segment")
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            return (0, 0), ("unsupported_format", f"JPEG segment 0xff{marker:02x} at byte {pos - 2} has length {length}")
        if marker in _SOF:
            if pos + 7 > n:
                return (0, 0), ("truncated", f"JPEG of {n} bytes ends inside its frame header")
            h = (data[pos + 3] << 8) | data[pos + 4]
            w = (data[pos + 5] << 8) | data[pos + 6]
            return (w, h), None
        pos += length


def _png_size(data: bytes) -> tuple[tuple[int, int], tuple[str, str] | None]:
    if len(data) < 24:
        return (0, 0), ("truncated", f"PNG of {len(data)} bytes ends inside its IHDR chunk")
    if data[12:16] != b"IHDR":
        return (0, 0), ("unsupported_format", "PNG without an IHDR chunk first")
    w, h = struct.unpack(">II", data[16:24])
    return (w, h), None


def _other_format(data: bytes) -> str | None:
    """Name of a common image format that vitdata refuses, from its magic bytes (for the message)."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "HEIF/AVIF"
    if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or data[:4] == b"\xff\x4f\xff\x51":
        return "JPEG 2000"
    return None


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _jpeg_structure(data: bytes) -> tuple[str | None, str]:
    """A complete JPEG has an EOI marker after its last SOS (entropy-coded bytes never hold 0xFF 0xD9:
    a 0xFF there is stuffed as 0xFF 0x00). Some decoders fill a cut image with grey; vitdata refuses it."""
    # Searched from where each marker sits (EOI near the end, the first SOS near the start) so a
    # complete file costs a few short scans, not a backward pass over all its entropy-coded bytes.
    if data.find(b"\xff\xda") < 0:
        return "truncated", "JPEG without a scan (no SOS marker)"
    eoi = data.rfind(b"\xff\xd9")
    if eoi < 0 or data.find(b"\xff\xda", eoi) >= 0:
        sos = data.rfind(b"\xff\xda")
        return "truncated", f"JPEG ends inside its last scan (no EOI marker after byte {sos})"
    return None, ""


def _png_structure(data: bytes) -> tuple[str | None, str]:
    """Walk the chunks: each must fit in the file and match its CRC-32, and IEND must be reached."""
    pos, n = 8, len(data)
    while pos + 12 <= n:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > n:
            return "truncated", f"PNG ends inside chunk {kind.decode('latin-1')!r} at byte {pos}"
        if zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return "decode_error", f"PNG chunk {kind.decode('latin-1')!r} at byte {pos} fails its CRC"
        if kind == b"IEND":
            return None, ""
        pos = end
    return "truncated", "PNG ends before its IEND chunk"


def write_control(path: str, control: dict[str, np.ndarray]) -> None:
    """Write one epoch's control file atomically (npz, no pickle)."""
    from vitdata.io import atomic_write

    atomic_write(path, lambda f: np.savez(f, **control))


def load_control(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def control_path(directory: str, dali_epoch: int) -> str:
    return os.path.join(directory, f"ctl-{dali_epoch:06d}.npz")


# DALI hands a worker's exception to the main process as a RuntimeError holding only its text, so a
# worker's DataError travels by field instead: one JSON record per failed sample in the control
# directory, written before the exception is raised, read back by the loader when the batch fails.
_ERROR_FIELDS = ("reason", "path", "sample_id", "offset", "detail")


def write_error_record(directory: str, dali_epoch: int, position: int, err: DataError) -> None:
    """Record ``err`` (raised for epoch position ``position`` of DALI epoch ``dali_epoch``) by its fields."""
    import json

    from vitdata.io import atomic_write

    record = {k: getattr(err, k) for k in _ERROR_FIELDS}
    record.update(dali_epoch=int(dali_epoch), position=int(position), pid=os.getpid())
    try:
        atomic_write(os.path.join(directory, f"error-{int(dali_epoch):06d}-{int(position):012d}.json"),
                     json.dumps(record).encode())
    except OSError:
        pass   # the exception itself still fails the batch; only the sample's name is lost


def read_error_records(directory: str, dali_epoch: int) -> list[tuple[int, DataError]]:
    """(epoch position, DataError) of every record of DALI epoch ``dali_epoch``, by position."""
    import glob
    import json

    out = []
    for path in sorted(glob.glob(os.path.join(directory, f"error-{int(dali_epoch):06d}-*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                r = json.load(f)
            out.append((int(r["position"]), DataError(r["reason"], r["path"], sample_id=r["sample_id"],
                                                      offset=r["offset"], detail=r["detail"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda t: t[0])


class EpochSource:
    """Picklable callable for ``fn.external_source``: per sample in worker processes (``batch=False,
    parallel=True``), per step in the pipeline thread (``batch=True, parallel=False``).

    Control file arrays: ``ids`` int64 (steps*batch,) in consumption order (eval padding = -1);
    ``step_size`` int32 (steps,); ``step_magnitude`` float32 (steps,); ``step_num_ops`` int32
    (steps,); ``extra_magnitude`` float32 (steps*batch,) the oracle's per-sample addition;
    ``epoch`` int64 () the loader's epoch number (for messages); optional ``quarantine`` int64 (q,) ids a
    decoder refused (``vitdata.quarantine``), substituted before they are read.
    """

    def __init__(self, reader, index, control_dir: str, batch_size: int, max_ops: int, max_pixels: int,
                 num_outputs: int = len(OUTPUTS)):
        # num_outputs: 8 (train with RandAugment), 6 (train without: no mag_bin/active), 5 (eval: no size)
        self.num_outputs = int(num_outputs)
        self.reader, self.index, self.control_dir = reader, index, control_dir
        self.batch_size, self.max_ops, self.max_pixels = int(batch_size), max(1, int(max_ops)), int(max_pixels)
        self._epoch_key = None
        self._ctl = None
        self._quarantine = None   # ids of the control's ``quarantine`` array (decoder-refused), or None
        self._pos = None      # epoch position being read (names the sample in an error)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_epoch_key"], state["_ctl"], state["_quarantine"] = None, None, None
        return state

    def _control(self, dali_epoch: int) -> dict[str, np.ndarray]:
        if self._epoch_key != dali_epoch:
            self._ctl = load_control(control_path(self.control_dir, dali_epoch))
            q = self._ctl.get("quarantine")
            self._quarantine = frozenset(int(i) for i in q) if q is not None and len(q) else None
            self._epoch_key = dali_epoch
        return self._ctl

    def __call__(self, info):
        """One sample for DALI's ``SampleInfo`` (worker processes, ``batch=False``), or the whole step for a
        ``BatchInfo`` (the in-thread source, ``batch=True``: one call and stacked arrays per step instead of
        a call and eight small arrays per sample, the same values)."""
        watch_parent_if_worker()   # a DALI worker exits when the trainer dies (issue 13 item 10)
        batched = not hasattr(info, "idx_in_epoch")
        self._pos = None
        try:
            return self._batch(info) if batched else self._sample(info)
        except StopIteration:
            raise
        except DataError as e:
            if not batched:
                write_error_record(self.control_dir, info.epoch_idx, info.idx_in_epoch, e)
            raise
        except Exception as e:
            # Anything else (a bug, a reader that raised something unexpected) is named by sample here.
            pos, sid = self._pos, None
            try:
                sid = int(self._control(info.epoch_idx)["ids"][pos])
            except Exception:
                pass
            where = self.index.describe(sid) if sid is not None and sid >= 0 else f"epoch position {pos}"
            err = DataError("decode_error", where, sample_id=sid,
                            detail=f"source pid {os.getpid()} raised {type(e).__name__}: {e}\n"
                                   + traceback.format_exc())
            if not batched:
                write_error_record(self.control_dir, info.epoch_idx, info.idx_in_epoch, err)
            raise err from e

    def _batch(self, info):
        ctl = self._control(info.epoch_idx)
        ids, b, step = ctl["ids"], self.batch_size, info.iteration
        start = step * b
        if start >= len(ids):
            raise StopIteration
        encoded, sids, status = [], np.empty(b, np.int64), np.empty(b, np.int32)
        for j in range(b):
            self._pos = start + j
            sids[j], status[j], data = self._resolve(ids, start + j, int(ids[start + j]))
            encoded.append(np.frombuffer(data, np.uint8))
        orig = np.ascontiguousarray(ids[start:start + b], np.int64)
        pad = orig < 0
        n = self.max_ops
        mag = float(ctl["step_magnitude"][step]) + ctl["extra_magnitude"][start:start + b].astype(np.float64)
        out = (encoded,
               np.where(pad, -1, np.asarray(self.index.label)[sids]).astype(np.int64),
               np.where(pad, -1, sids),
               orig,
               status,
               np.full((b, 2), float(ctl["step_size"][step]), np.float32),
               np.repeat(magnitude_to_bin(mag)[:, None], n, axis=1),
               np.repeat((np.arange(n) < int(ctl["step_num_ops"][step])).astype(np.int32)[None], b, axis=0))
        return out[:self.num_outputs]

    def _sample(self, info):
        ctl = self._control(info.epoch_idx)
        ids = ctl["ids"]
        pos = self._pos = info.idx_in_epoch
        if pos >= len(ids):
            raise StopIteration
        step = pos // self.batch_size
        orig = int(ids[pos])
        sid, status, data = self._resolve(ids, pos, orig)
        n = self.max_ops
        mag = float(ctl["step_magnitude"][step]) + float(ctl["extra_magnitude"][pos])
        size = float(ctl["step_size"][step])
        active = (np.arange(n) < int(ctl["step_num_ops"][step])).astype(np.int32)
        out = (np.frombuffer(data, np.uint8),
                np.array(int(self.index.label[sid]) if orig >= 0 else -1, np.int64),
                np.array(sid if orig >= 0 else -1, np.int64),
                np.array(orig, np.int64),
                np.array(status, np.int32),
                np.array([size, size], np.float32),
                np.full(n, magnitude_to_bin(mag), np.int32),
                active)
        return out[:self.num_outputs]

    def _resolve(self, ids: np.ndarray, pos: int, orig: int) -> tuple[int, int, bytes]:
        return resolve_sample(self.reader, self.index, ids, pos, self.max_pixels, self._quarantine)


def resolve_sample(reader, index, ids: np.ndarray, pos: int, max_pixels: int,
                   quarantine: frozenset | None = None) -> tuple[int, int, bytes]:
    """(delivered id, status, bytes) for position ``pos`` of the epoch order ``ids``.

    The id is ``ids[pos]``, or, when its check fails, the next id of the order (wrapping around) that
    passes: a pure function of the order, so every backend, worker count and resume picks the same one.
    Eval padding (-1) delivers the first valid id of the order; the caller flags it by its id -1.
    ``quarantine``: ids a decoder refused (``vitdata.quarantine``); each fails here as ``decode_error``
    before it is read, like a header-failed id.
    Raises DataError when none of the next ``MAX_SUBSTITUTE_ATTEMPTS`` entries is usable.
    """
    orig = int(ids[pos])
    want = orig if orig >= 0 else int(ids[ids >= 0][0])
    if quarantine and want in quarantine:
        data, reason, detail = None, "decode_error", "quarantined: a decoder refused it earlier"
    else:
        data, reason, detail = check_sample(reader, index, want, max_pixels)
    if reason is None:
        return want, 0, data
    first_status = reason_code(reason)
    for k in range(1, min(MAX_SUBSTITUTE_ATTEMPTS, len(ids)) + 1):
        cand = int(ids[(pos + k) % len(ids)])
        if cand < 0 or cand == want or (quarantine and cand in quarantine):
            continue
        data, r, _ = check_sample(reader, index, cand, max_pixels)
        if r is None:
            return cand, first_status, data
    raise DataError(reason, index.describe(want), sample_id=want,
                    detail=f"{detail}; and no usable substitute in the next {MAX_SUBSTITUTE_ATTEMPTS} entries "
                           f"of the epoch order")
