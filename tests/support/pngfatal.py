"""PNGs whose chunks and CRCs are sound but whose image data libpng refuses: the corpus of
``vitdata.data.pngdata``. :data:`KINDS` maps each kind to libpng's words (DALI 2.4's CPU decoder, on the
process's stderr); Pillow refuses each too, except :data:`PILLOW_DECODES`; :data:`ACCEPTED` are near misses both decoders decode. :func:`good` builds sound PNGs of
every colour type, bit depth and interlace method, with a small Adam7 encoder of its own (Pillow writes
no interlaced PNG)."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from vitdata.bench import badcorpus
from vitdata.data import selfid

KINDS = {
    "zlib_backref": "",                       # badcorpus png_bad_zlib: libpng says "invalid distance too far back"
    "adler_wrong": "incorrect data check",
    "rows_short": "Not enough image data",
    "stream_cut_after_rows": "Not enough image data",
    "filter_byte_7": "bad adaptive filter value",
    "filter_byte_5_last_row": "bad adaptive filter value",
    "interlaced_filter_pass_7": "bad adaptive filter value",
    "idat_run_broken": "Not enough image data",
    "bit_depth_3": "",                        # DALI's own PNG parser: "Unexpected bitdepth"
    "colour_type_5": "",                      # DALI's own PNG parser: "Unexpected color type"
    "compression_method_1": "Invalid IHDR data",
    "filter_method_1": "Invalid IHDR data",
    "interlace_method_2": "Invalid IHDR data",
    "palette_missing": "Missing PLTE before IDAT",
    "unknown_critical_chunk": "unhandled critical chunk",
    "no_idat": "",
}
# kinds Pillow decodes all the same (it reads until it has the rows, ignores IHDR's compression method and
# unknown chunks, and reads a palette image without PLTE as grey): the check follows libpng, so both
# backends skip the same files
PILLOW_DECODES = ("stream_cut_after_rows", "compression_method_1", "unknown_critical_chunk", "palette_missing")
ACCEPTED = ("rows_long", "unknown_ancillary_chunk", "palette_index_past_palette", "idat_split_in_three")
SIG = b"\x89PNG\r\n\x1a\n"


def build(parts: list[tuple[bytes, bytes]]) -> bytes:
    return SIG + b"".join(badcorpus.png_chunk(k, b) for k, b in parts)


def _ihdr(w, h, depth, colour, compression=0, filt=0, interlace=0) -> tuple[bytes, bytes]:
    return b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, compression, filt, interlace)


def _rgb(sample_id: int, label: int, size: int) -> np.ndarray:
    return selfid.make_image(sample_id, label, size)


def _rows(img: np.ndarray, filt: int = 0) -> bytes:
    """Filter-type ``filt`` (0: none) rows of an 8-bit image, each with its filter byte."""
    flat = img.reshape(img.shape[0], -1)
    return b"".join(bytes([filt]) + row.tobytes() for row in flat)


def adam7(img: np.ndarray) -> bytes:
    """The inflated image data of an 8-bit image, interlaced: Adam7's 7 passes, filter 0."""
    out = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        sub = img[y0::dy, x0::dx]
        if sub.size:
            out += _rows(sub)
    return out


def good(colour: int, depth: int, interlace: int = 0, size: int = 19) -> bytes:
    """A sound PNG of ``colour`` type at ``depth`` bits, Adam7-interlaced with ``interlace=1``."""
    rng = np.random.default_rng(colour * 100 + depth * 10 + interlace)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    parts = [_ihdr(size, size, depth, colour, interlace=interlace)]
    if colour == 3:
        parts.append((b"PLTE", bytes(range(48))))          # 16 entries
    if depth < 8:   # packed: one byte holds 8 // depth samples; random bytes are valid samples
        stride = (size * depth + 7) // 8
        if interlace:
            raise ValueError("sub-byte depths are built non-interlaced here")
        raw = b"".join(b"\0" + rng.integers(0, 256, stride, dtype=np.uint8).tobytes() for _ in range(size))
    else:
        top = 16 if colour == 3 else 256
        img = rng.integers(0, top, (size, size, channels * depth // 8), dtype=np.uint8)
        raw = adam7(img) if interlace else _rows(img)
    parts += [(b"IDAT", zlib.compress(raw)), (b"IEND", b"")]
    return build(parts)


def make(kind: str, sample_id: int = 0, label: int = 0, size: int = 24) -> bytes:
    """The bytes of one PNG of ``kind`` (one of :data:`KINDS` or :data:`ACCEPTED`)."""
    img = _rgb(sample_id, label, size)
    raw = _rows(img)
    ihdr = _ihdr(size, size, 8, 2)
    end = (b"IEND", b"")
    z = zlib.compress(raw)
    if kind == "zlib_backref":
        return badcorpus.make("png_bad_zlib", sample_id, label, size)
    if kind == "filter_byte_7":
        return badcorpus.make("png_bad_filter", sample_id, label, size)
    if kind == "adler_wrong":
        return build([ihdr, (b"IDAT", z[:-4] + bytes(4 * [0x5A])), end])
    if kind == "rows_short":
        return build([ihdr, (b"IDAT", zlib.compress(raw[:-1])), end])
    if kind == "rows_long":
        return build([ihdr, (b"IDAT", zlib.compress(raw + bytes(50))), end])
    if kind == "stream_cut_after_rows":
        return build([ihdr, (b"IDAT", z[:-4]), end])
    if kind == "filter_byte_5_last_row":
        cut = len(raw) - (1 + 3 * size)
        return build([ihdr, (b"IDAT", zlib.compress(raw[:cut] + b"\x05" + raw[cut + 1:])), end])
    if kind == "interlaced_filter_pass_7":
        data = bytearray(adam7(img))
        data[len(data) - (size // 2) * (1 + 3 * size)] = 6    # pass 7: every other row at full width
        return build([_ihdr(size, size, 8, 2, interlace=1), (b"IDAT", zlib.compress(bytes(data))), end])
    if kind == "idat_run_broken":
        return build([ihdr, (b"IDAT", z[:len(z) // 2]), (b"tEXt", b"k\0v"), (b"IDAT", z[len(z) // 2:]), end])
    if kind == "idat_split_in_three":
        third = len(z) // 3
        return build([ihdr, (b"IDAT", z[:third]), (b"IDAT", z[third:2 * third]), (b"IDAT", z[2 * third:]), end])
    if kind == "bit_depth_3":
        return build([_ihdr(size, size, 3, 2), (b"IDAT", z), end])
    if kind == "colour_type_5":
        return build([_ihdr(size, size, 8, 5), (b"IDAT", z), end])
    if kind == "compression_method_1":
        return build([_ihdr(size, size, 8, 2, compression=1), (b"IDAT", z), end])
    if kind == "filter_method_1":
        return build([_ihdr(size, size, 8, 2, filt=1), (b"IDAT", z), end])
    if kind == "interlace_method_2":
        return build([_ihdr(size, size, 8, 2, interlace=2), (b"IDAT", z), end])
    if kind == "palette_missing":
        return build([_ihdr(size, size, 8, 3), (b"IDAT", zlib.compress(_rows(img[..., :1] % 16))), end])
    if kind == "palette_index_past_palette":
        return build([_ihdr(size, size, 8, 3), (b"PLTE", bytes(range(12))),
                      (b"IDAT", zlib.compress(_rows(np.full_like(img[..., :1], 200)))), end])
    if kind == "unknown_critical_chunk":
        return build([ihdr, (b"ABCD", b"xyz"), (b"IDAT", z), end])
    if kind == "unknown_ancillary_chunk":
        return build([ihdr, (b"abCd", b"xyz"), (b"IDAT", z), end])
    if kind == "no_idat":
        return build([ihdr, end])
    raise ValueError(f"unknown kind {kind!r}")


def pillow_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()
