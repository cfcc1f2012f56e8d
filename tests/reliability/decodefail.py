"""Files whose headers pass every check of ``pipelines.source.check_bytes`` but whose coded data fails in
the decoder (docs/reliability.md I1): built here from good self-identifying images."""
from __future__ import annotations

import struct
import zlib

from vitdata.data import selfid

KINDS = ("jpeg_bad_component", "png_bad_zlib", "png_bad_filter")


def _chunks(png: bytes):
    pos = 8
    while pos < len(png):
        n = struct.unpack(">I", png[pos:pos + 4])[0]
        yield png[pos + 4:pos + 8], png[pos + 8:pos + 8 + n]
        pos += 12 + n


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_with_idat(png: bytes, idat: bytes) -> bytes:
    out = [png[:8]]
    for kind, body in _chunks(png):
        if kind == b"IDAT":
            continue
        if kind == b"IEND":
            out.append(_chunk(b"IDAT", idat))
        out.append(_chunk(kind, body))
    return b"".join(out)


def make(kind: str, sample_id: int = 0, label: int = 0, size: int = 32) -> bytes:
    """The bytes of one decoder-failing file of ``kind`` (one of :data:`KINDS`)."""
    img = selfid.make_image(sample_id, label, size)
    if kind == "jpeg_bad_component":
        # The scan header (SOS) names component 9, which the frame (SOF) does not have.
        data = bytearray(selfid.encode(img, "jpeg"))
        sos = data.find(b"\xff\xda")
        data[sos + 5] = 9
        return bytes(data)
    png = selfid.encode(img, "png")
    raw = zlib.decompress(b"".join(body for k, body in _chunks(png) if k == b"IDAT"))
    if kind == "png_bad_zlib":
        # A deflate stream with a back-reference before the start of the window, under a valid CRC.
        return _png_with_idat(png, b"\x78\x01" + _BadDeflate().stream() + b"\x00\x00\x00\x00")
    if kind == "png_bad_filter":
        # Every row's filter byte set to 7 (only 0-4 exist), under a valid zlib stream and CRC.
        h = img.shape[0]
        stride = len(raw) // h
        rows = bytearray(raw)
        for r in range(h):
            rows[r * stride] = 7
        return _png_with_idat(png, zlib.compress(bytes(rows)))
    raise ValueError(f"unknown kind {kind!r}")


class _BadDeflate:
    """A final fixed-Huffman deflate block: one literal, then a length-3 match at distance 100."""

    def __init__(self):
        self.bits: list[int] = []

    def _put(self, value: int, n: int, msb_first: bool = False) -> None:
        rng = range(n - 1, -1, -1) if msb_first else range(n)
        self.bits.extend((value >> i) & 1 for i in rng)

    def stream(self) -> bytes:
        self._put(1, 1)          # BFINAL
        self._put(1, 2)          # BTYPE = fixed Huffman
        self._put(0x30 + 0, 8, msb_first=True)        # literal 0 (codes 0x30..0xBF for 0..143)
        self._put(0b0000001, 7, msb_first=True)       # length code 257 = length 3
        self._put(13, 5, msb_first=True)               # distance code 13: 97..128, 5 extra bits
        self._put(3, 5)          # extra bits: 97 + 3 = 100
        self._put(0, 7, msb_first=True)                # end of block (256)
        while len(self.bits) % 8:
            self.bits.append(0)
        return bytes(int("".join(map(str, self.bits[i:i + 8][::-1])), 2) for i in range(0, len(self.bits), 8))
