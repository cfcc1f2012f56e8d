"""JPEGs that libjpeg refuses from their marker segments alone (a fatal error before any pixel), built from
Pillow's encoding of self-identifying images: the corpus of ``vitdata.data.jpegfatal``. :data:`KINDS` maps
each kind to libjpeg's words (DALI 2.4's CPU decoder); :data:`ACCEPTED` are near misses that both decoders
decode (unused bad tables, a Motion-JPEG frame without Huffman tables, a sequential scan with odd Ss/Se).
"""
from __future__ import annotations

import io
import struct

from PIL import Image

from vitdata.data import selfid

KINDS = {
    "bad_component": "Invalid component ID 9 in SOS",
    "scan_without_components": "Bogus marker length",
    "sampling_factor_zero": "Bogus sampling factors",
    "sampling_factor_five": "Bogus sampling factors",
    "fractional_sampling": "Fractional sampling not implemented yet",
    "mcu_too_large": "Sampling factors too large for interleaved scan",
    "dqt_index": "Bogus DQT index 4",
    "dqt_too_short": "Bogus marker length",
    "dht_index": "Bogus DHT index 4",
    "dht_count_past_segment": "Bogus Huffman table definition",
    "quant_table_undefined": "Quantization table 0x02 was not defined",
    "huffman_table_undefined": "Huffman table 0x02 was not defined",
    "huffman_oversubscribed": "Bogus Huffman table definition",
    "dc_symbol_above_15": "Bogus Huffman table definition",
    "progressive_dc_se": "Invalid progressive/lossless parameters Ss=0 Se=1",
    "progressive_ac_two_components": "Invalid progressive/lossless parameters Ss=1",
    "differential_frame": "Unsupported JPEG process: SOF type 0xc5",
    "precision_7": "Unsupported JPEG data precision 7",
    "precision_12": "Unsupported JPEG data precision 12",
}
# kinds DALI's decoder refuses without libjpeg's words on stderr (its parser turns the 12-bit frame away)
SILENT = ("precision_12",)
ACCEPTED = ("unused_bad_tables", "no_huffman_tables", "sequential_odd_ss_se")


def _encode(sample_id: int, label: int, size: int, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(selfid.make_image(sample_id, label, size)).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _segments(data: bytes):
    """(marker, position of its 0xFF, segment length) of each segment before the first scan's coded data."""
    pos = 2
    while True:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        yield marker, pos, length
        if marker == 0xDA:
            return
        pos += 2 + length


def _scans(data: bytes) -> list[int]:
    """Position of the 0xFF of each scan header (SOS) of a file whose coded data holds no 0xFFDA."""
    out, pos = [], data.find(b"\xff\xda")
    while pos >= 0:
        out.append(pos)
        pos = data.find(b"\xff\xda", pos + 2)
    return out


def _first(data: bytes, marker: int) -> int:
    """Position of the first byte after the length field of the first segment of ``marker``."""
    return next(p for m, p, _ in _segments(data) if m == marker) + 4


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _before_scan(data: bytes, seg: bytes) -> bytes:
    sos = data.find(b"\xff\xda")
    return data[:sos] + seg + data[sos:]


def _set(data: bytes, pos: int, value: int) -> bytes:
    out = bytearray(data)
    out[pos] = value
    return bytes(out)


def _first_table(data: bytes) -> bytes:
    """The first Huffman table of the first DHT segment (its class/index byte, counts and symbols)."""
    q = _first(data, 0xC4)
    return data[q:q + 17 + sum(data[q + 1:q + 17])]


def make(kind: str, sample_id: int = 0, label: int = 0, size: int = 48) -> bytes:
    """The bytes of one file of ``kind`` (one of :data:`KINDS` or :data:`ACCEPTED`)."""
    if kind.startswith("progressive"):
        data = _encode(sample_id, label, size, progressive=True)
        sos = _first(data, 0xDA)
        if kind == "progressive_dc_se":           # the first (DC) scan with Se = 1
            return _set(data, sos + 2 + 2 * data[sos], 1)
        # the first AC scan (one component, Ss > 0) rewritten to name two components
        p = next(p for p in _scans(data) if data[p + 4] == 1 and data[p + 7])
        comp, sel, params = data[p + 5], data[p + 6], data[p + 7:p + 10]
        other = 2 if comp != 2 else 1
        return data[:p] + _segment(0xDA, bytes([2, comp, sel, other, sel]) + params) + data[p + 10:]
    data = _encode(sample_id, label, size, subsampling=2)
    sof, sos = _first(data, 0xC0), _first(data, 0xDA)
    if kind == "bad_component":
        return _set(data, sos + 1, 9)
    if kind == "differential_frame":
        return _set(data, sof - 3, 0xC5)
    if kind.startswith("precision_"):
        return _set(data, sof, int(kind[len("precision_"):]))
    if kind == "scan_without_components":
        return _set(data, sos, 0)
    if kind in ("sampling_factor_zero", "sampling_factor_five", "mcu_too_large"):
        return _set(data, sof + 7, {"sampling_factor_zero": 0x02, "sampling_factor_five": 0x52,
                                    "mcu_too_large": 0x44}[kind])
    if kind == "fractional_sampling":               # luma 3x1, chroma 2x1 and 1x1
        out = bytearray(data)
        out[sof + 7], out[sof + 10], out[sof + 13] = 0x31, 0x21, 0x11
        return bytes(out)
    dqt = _first(data, 0xDB)
    if kind in ("dqt_index", "dqt_too_short"):
        table = data[dqt + 1:dqt + 65]
        body = bytes([4]) + table if kind == "dqt_index" else bytes([2]) + table[:63]
        return _before_scan(data, _segment(0xDB, body))
    if kind == "quant_table_undefined":
        return _set(data, sof + 8, 2)
    if kind == "dht_index":
        return _before_scan(data, _segment(0xC4, bytes([4]) + _first_table(data)[1:]))
    if kind == "dht_count_past_segment":
        table = bytearray(_first_table(data))
        table[16] += 200
        return _before_scan(data, _segment(0xC4, bytes(table)))
    if kind == "huffman_table_undefined":
        return _set(data, sos + 2, 0x20 | (data[sos + 2] & 15))
    if kind in ("huffman_oversubscribed", "unused_bad_tables"):
        table = bytearray(_first_table(data))      # the luma DC table: 3 codes of length 1
        n = sum(table[1:17])
        table[1:17] = bytes([3, n - 3] + [0] * 14)
        if kind == "unused_bad_tables":           # defined as table 2, which no scan uses; so is DQT 2
            table[0] = 0x02
            return _before_scan(data, _segment(0xC4, bytes(table)) + _segment(0xDB, bytes([2]) + bytes(range(1, 65))))
        return _before_scan(data, _segment(0xC4, bytes(table)))
    if kind == "dc_symbol_above_15":
        table = bytearray(_first_table(data))
        table[17] = 16
        return _before_scan(data, _segment(0xC4, bytes(table)))
    if kind == "no_huffman_tables":                # Pillow writes the standard tables libjpeg falls back on
        head = b"".join(data[p:p + 2 + n] for m, p, n in _segments(data) if m not in (0xC4, 0xDA))
        return data[:2] + head + data[data.find(b"\xff\xda"):]
    if kind == "sequential_odd_ss_se":             # libjpeg warns "Invalid SOS parameters for sequential JPEG"
        return _set(data, sos + 1 + 2 * data[sos] + 1, 62)
    raise ValueError(f"unknown kind {kind!r}")
