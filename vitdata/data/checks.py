"""A sample checked before any decoder sees it, and the substitution rule every backend shares.

:func:`check_sample` reads a sample and checks its label, format, pixel budget and completeness from the
bytes alone (no pixels decoded); :func:`resolve_sample` applies the epoch order's substitution rule when
a sample fails. Statuses travel between processes as small ints: :func:`reason_code` / :func:`code_reason`
map them to and from the reason codes of :data:`vitdata.errors.REASONS`.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from vitdata.data import jpegwalk, pngdata
from vitdata.errors import REASONS, WARNINGS, DataError


# vitdata reads JPEG and PNG only (the index picks up .jpg/.jpeg/.png names); Pillow calls some camera
# JPEGs "MPO". Everything else -- GIF, WebP, BMP, TIFF named .jpg -- is refused as ``unsupported_format``
# rather than decoded by whichever decoder happens to accept it (docs/reliability.md, "Decode policy").
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG"})   # by magic bytes (a camera's MPO is a JPEG)


# How many later entries of the epoch order a skipped sample may try before giving up.
MAX_SUBSTITUTE_ATTEMPTS = 32


def reason_code(reason: str) -> int:
    return 1 + REASONS.index(reason)


# Statuses of samples delivered with a decoder warning (vitdata.errors.WARNINGS), not substituted.
WARNING_CODES = np.array([reason_code(r) for r in WARNINGS], np.int32)


def code_reason(code: int) -> str | None:
    return None if code == 0 else REASONS[code - 1]


def check_sample(reader, index, sample_id: int, max_pixels: int) -> tuple[bytes | None, str | None, str]:
    """Read sample ``sample_id`` and check it before any decoder sees it.

    Returns (data, None, "") when it is fine, or (None, reason, detail). Checks, in order: the bytes can be
    read (index reasons: missing, size_changed, truncated, checksum_mismatch, read_timeout); the label is
    in range (bad_label); the header names JPEG or PNG (unsupported_format) with non-zero dimensions
    within ``max_pixels`` (too_many_pixels); the file is complete (truncated: a JPEG without an end
    marker after its last scan, a PNG whose chunks stop before IEND; decode_error: a PNG chunk CRC
    mismatch, or a JPEG libjpeg refuses from its marker segments alone, :mod:`vitdata.data.jpegfatal`, or a
    PNG whose image data libpng refuses, :mod:`vitdata.data.pngdata`, unless ``reader.check_png_data`` is
    false). Headers are parsed and the structure walked before any pixel count is trusted: a 20000x20000
    bomb is refused in microseconds.

    A JPEG that libjpeg decodes with a ``Corrupt JPEG data`` warning (:mod:`vitdata.data.jpegwalk`) gives
    (data, "corrupt_data", detail): delivered and counted, or with ``reader.skip_corrupt`` (the loader's
    ``jpeg_warnings="skip"``) (None, "corrupt_data", detail), a bad sample like any other.
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
    data, reason, detail = check_bytes(data, max_pixels, png_data=getattr(reader, "check_png_data", True))
    if data is not None and reason is not None and getattr(reader, "skip_corrupt", False):
        return None, reason, detail
    return data, reason, detail


def check_bytes(data: bytes, max_pixels: int, png_data: bool = True) -> tuple[bytes | None, str | None, str]:
    """The format, size and completeness checks of :func:`check_sample` on encoded bytes; with ``png_data``,
    also a PNG's image data (:mod:`vitdata.data.pngdata`: inflated, rows and filter bytes checked).

    The format comes from the magic bytes and the size from the JPEG frame header (SOFn) or the PNG
    IHDR chunk, read by walking the marker segments: no pixels are decoded and no decoder library is
    involved (Pillow's lazy open parsed every table in Python and cost 2-3x more per photo).
    (data, "corrupt_data", detail): a JPEG libjpeg decodes with a warning (see :func:`check_sample`)."""
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
    warning = None
    if fmt == "PNG":
        reason, detail = _png_structure(data)
        if reason is None and png_data:
            detail = pngdata.verify(data)
            reason = "decode_error" if detail else None
            detail = f"libpng would refuse it: {detail}" if detail else ""
    else:
        reason, detail, warning = jpegwalk.walk(data)
    if reason is not None:
        return None, reason, detail
    if warning is not None:
        return data, "corrupt_data", f"libjpeg would decode it with \"Corrupt JPEG data: {warning}\""
    return data, None, ""


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as stored in a JPEG frame header or a PNG IHDR chunk (before EXIF orientation), or None
    when the bytes are neither or the header is cut."""
    if data[:2] == b"\xff\xd8":
        size, why = _jpeg_size(data)
    elif data[:8] == _PNG_SIG:
        size, why = _png_size(data)
    else:
        return None
    return None if why is not None else size


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


def resolve_sample(reader, index, ids: np.ndarray, pos: int, max_pixels: int,
                   quarantine: frozenset | None = None) -> tuple[int, int, bytes]:
    """(delivered id, status, bytes) for position ``pos`` of the epoch order ``ids``.

    The id is ``ids[pos]``, or, when its check fails, the next id of the order (wrapping around) that
    passes: a pure function of the order, so every backend, worker count and resume picks the same one.
    Eval padding (-1) delivers the first valid id of the order; the caller flags it by its id -1.
    ``quarantine``: ids a decoder refused (``vitdata.loader.quarantine``); each fails here as ``decode_error``
    before it is read, like a header-failed id.
    A sample delivered with a decoder warning (``corrupt_data``, see :func:`check_sample`) keeps its id and
    gets that reason's status; only a sample without any finding is taken as a substitute.
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
    if data is not None:   # delivered with a decoder warning (corrupt_data): the status counts it
        return want, reason_code(reason), data
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
