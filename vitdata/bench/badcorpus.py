"""Bad files built from good ones, for the quarantine benchmark (and the tests' corpora): a JPEG that libjpeg
refuses from its headers, and PNGs whose headers and CRCs pass every check of ``vitdata.data.checks`` but
whose coded data fails in the decoder.

=================== ================================================================ ==========================
kind                what it is                                                       caught by
=================== ================================================================ ==========================
jpeg_bad_component  the scan header (SOS) names component 9, which the frame lacks   the JPEG walk, before any
                                                                                     decoder (decode_error)
png_bad_zlib        a deflate stream with a back-reference before the start of the   the decoder: quarantine
                    window, under a valid CRC                                        and redo on DALI
png_bad_filter      every row's filter byte 7 (only 0-4 exist), under a valid zlib   the decoder
                    stream and CRC
=================== ================================================================ ==========================
"""
from __future__ import annotations

import struct
import zlib

from vitdata.data import selfid

KINDS = ("jpeg_bad_component", "png_bad_zlib", "png_bad_filter")


def jpeg_bad_component(jpeg: bytes) -> bytes:
    """``jpeg`` with its first scan header naming component 9, which its frame lacks ("Invalid component ID 9
    in SOS")."""
    out = bytearray(jpeg)
    out[out.find(b"\xff\xda") + 5] = 9
    return bytes(out)


def make(kind: str, sample_id: int = 0, label: int = 0, size: int = 32) -> bytes:
    """The bytes of one bad file of ``kind`` (one of :data:`KINDS`), from self-identifying image
    ``sample_id`` of class ``label``, ``size`` px square."""
    img = selfid.make_image(sample_id, label, size)
    if kind == "jpeg_bad_component":
        return jpeg_bad_component(selfid.encode(img, "jpeg"))
    png = selfid.encode(img, "png")
    if kind == "png_bad_zlib":
        return _png_with_idat(png, b"\x78\x01" + _bad_deflate() + b"\x00\x00\x00\x00")
    if kind == "png_bad_filter":
        raw = bytearray(zlib.decompress(b"".join(body for k, body in _chunks(png) if k == b"IDAT")))
        stride = len(raw) // img.shape[0]
        raw[::stride] = b"\x07" * img.shape[0]
        return _png_with_idat(png, zlib.compress(bytes(raw)))
    raise ValueError(f"unknown kind {kind!r}")


def _chunks(png: bytes):
    pos = 8
    while pos < len(png):
        n = struct.unpack(">I", png[pos:pos + 4])[0]
        yield png[pos + 4:pos + 8], png[pos + 8:pos + 8 + n]
        pos += 12 + n


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC-32."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_with_idat(png: bytes, idat: bytes) -> bytes:
    out = [png[:8]]
    for kind, body in _chunks(png):
        if kind == b"IDAT":
            continue
        if kind == b"IEND":
            out.append(png_chunk(b"IDAT", idat))
        out.append(png_chunk(kind, body))
    return b"".join(out)


def _bad_deflate() -> bytes:
    """A final fixed-Huffman deflate block: one literal, then a length-3 match at distance 100 (before the
    start of the output, so zlib says "invalid distance too far back")."""
    bits = [1, 1, 0]                                     # BFINAL, BTYPE = fixed Huffman (LSB first)
    bits += [int(c) for c in f"{0x30:08b}"]              # literal 0 (codes 0x30..0xBF for 0..143)
    bits += [int(c) for c in "0000001"]                  # length code 257 = length 3
    bits += [int(c) for c in f"{13:05b}"]                # distance code 13: 97..128, 5 extra bits
    bits += [(3 >> i) & 1 for i in range(5)]             # extra bits: 97 + 3 = 100
    bits += [0] * 7                                      # end of block (256)
    bits += [0] * (-len(bits) % 8)
    return bytes(int("".join(map(str, bits[i:i + 8][::-1])), 2) for i in range(0, len(bits), 8))
