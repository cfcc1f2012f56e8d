"""The PNG checks that need the image data: what libpng refuses in a file whose chunks and CRCs are sound.

:func:`vitdata.data.checks.check_bytes` walks a PNG's chunks (each complete, each CRC right, IEND reached);
a file can pass that and still fail in the decoder, which on DALI costs a failed step (probe, quarantine,
redo: ``vitdata.loader.backends.dali_redo``) where a file refused here costs one substitution. libpng's fatal
errors on such files, each checked against DALI's CPU decoder (libpng) and Pillow, which both refuse the
file (``tests/data/test_png_data.py``):

* IHDR: a bit depth the colour type does not allow, compression or filter method other than 0, interlace
  method other than 0 or 1 (``Invalid IHDR data``);
* a critical chunk libpng does not know (``unhandled critical chunk``), a palette image without PLTE
  before its image data (``Missing PLTE before IDAT``), no IDAT at all;
* the zlib stream of the IDAT chunks (the first run of consecutive ones: libpng stops reading image data
  at the first other chunk) is not valid deflate, fails its Adler-32 (``incorrect data check``), or
  inflates to fewer bytes than the rows need or stops before its end (``Not enough image data``: DALI
  refuses a stream cut after the last row's bytes, Pillow decodes it);
* a row whose filter byte is not 0-4 (``bad adaptive filter value``), in each of the 7 passes of an
  interlaced (Adam7) image.

More image data than the rows need is libpng's warning ``Too much image data``: the file decodes, and is
delivered. Inflating costs 0.60x DALI's CPU decode of the file and 0.46x Pillow's (2.2 ms on a 344 KB
photo saved as PNG: ``vitdata bench png-check``). A file found sound is remembered for the life of the
process by a hash of its IHDR and its IDAT chunks' CRCs (up to 2**19 files), so later epochs pay the chunk
walk only. ``LoaderConfig(check_png_data=False)`` leaves the image data to the decoder.
"""
from __future__ import annotations

import hashlib
import struct
import zlib

__all__ = ["verify"]

# colour type -> (channels, allowed bit depths)
_COLOUR = {0: (1, (1, 2, 4, 8, 16)), 2: (3, (8, 16)), 3: (1, (1, 2, 4, 8)), 4: (2, (8, 16)), 6: (4, (8, 16))}
_KNOWN_CRITICAL = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
# Adam7: (x start, y start, x step, y step) of each pass
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PIECE = 1 << 20
_SOUND_MAX = 1 << 19        # remembered sound files per process (about 25 MB of 8-byte keys at most)
_sound: set[int] = set()


def verify(data: bytes) -> str | None:
    """libpng's words for why it would refuse the PNG ``data``, or None when its image data is sound.
    ``data`` has passed the chunk walk of ``vitdata.data.checks`` (complete chunks, CRCs, IEND)."""
    w, h, depth, colour, compression, filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if colour not in _COLOUR or depth not in _COLOUR[colour][1]:
        return f"Invalid IHDR data: bit depth {depth} with colour type {colour}"
    if compression or filt or interlace > 1:
        return (f"Invalid IHDR data: compression method {compression}, filter method {filt}, "
                f"interlace method {interlace}")
    idat: list[memoryview] = []
    crcs = bytearray(data[12:29])
    palette = run_over = False
    view, pos = memoryview(data), 8
    while True:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IEND":
            break
        if not kind[0] & 0x20 and kind not in _KNOWN_CRITICAL:
            return f"{kind.decode('latin-1')}: unhandled critical chunk"
        if kind == b"PLTE":
            palette = True
        if kind == b"IDAT":
            if colour == 3 and not palette:
                return "IDAT: Missing PLTE before IDAT"
            if not run_over:
                idat.append(view[pos + 8:pos + 8 + length])
                crcs += data[pos + 8 + length:pos + 12 + length]
        elif idat:
            run_over = True
        pos += 12 + length
    if not idat:
        return "no IDAT chunk: the file holds no image data"
    key = int.from_bytes(hashlib.blake2b(crcs, digest_size=8).digest(), "little")
    if key in _sound:
        return None
    why = _inflate_and_check(idat, w, h, _COLOUR[colour][0] * depth, interlace)
    if why is None and len(_sound) < _SOUND_MAX:
        _sound.add(key)
    return why


def _passes(w: int, h: int, interlace: int):
    """(columns, rows) of each pass that has pixels: the image itself, or Adam7's 7 sub-images."""
    if not interlace:
        return [(w, h)]
    out = []
    for x0, y0, dx, dy in _ADAM7:
        cols, rows = (w - x0 + dx - 1) // dx, (h - y0 + dy - 1) // dy
        if cols > 0 and rows > 0:
            out.append((cols, rows))
    return out


def _inflate_and_check(idat: list[memoryview], w: int, h: int, bits: int, interlace: int) -> str | None:
    """Inflate the IDAT run in pieces of at most ``_PIECE`` bytes (a 144 Mpx image is checked in bounded
    memory), checking each row's filter byte as its piece goes by."""
    rows_at, start = [], 0   # (pass, first byte, end, row stride) of each pass
    for p, (cols, rows) in enumerate(_passes(w, h, interlace)):
        stride = 1 + (cols * bits + 7) // 8
        rows_at.append((p, start, start + rows * stride, stride))
        start += rows * stride
    need, got = start, 0
    z = zlib.decompressobj()
    try:
        for part in idat:
            tail = part
            while tail and got <= need and not z.eof:
                piece = z.decompress(tail, min(_PIECE, need + 1 - got))
                tail = z.unconsumed_tail
                why = _filters(piece, got, rows_at, interlace)
                if why:
                    return why
                got += len(piece)
            if got > need or z.eof:   # more image data than the rows need: libpng's warning only
                break
    except zlib.error as e:
        return f"IDAT: zlib: {e}"
    if got < need:
        return f"Not enough image data: the IDAT stream inflates to {got} bytes, the rows need {need}"
    if got == need and not z.eof:
        return "Not enough image data: the IDAT stream stops before the end of its zlib stream"
    return None


def _filters(piece: bytes, at: int, rows_at, interlace: int) -> str | None:
    """The filter bytes of the rows that start in ``piece`` (bytes ``at`` .. of the inflated stream)."""
    end = at + len(piece)
    for p, first, last, stride in rows_at:
        lo, hi = max(at, first), min(end, last)
        if lo >= hi:
            continue
        r0 = -(-(lo - first) // stride)
        filters = piece[first + r0 * stride - at:hi - at:stride]
        if filters and max(filters) > 4:
            k = next(i for i, f in enumerate(filters) if f > 4)
            where = f"row {r0 + k}" if not interlace else f"pass {p + 1}, row {r0 + k}"
            return f"bad adaptive filter value {filters[k]} ({where})"
    return None
