"""The bad-input corpus of docs/reliability.md group A: 28 kinds of awkward files, plus helpers that mix them
into an ImageFolder tree or tar shards of good self-identifying samples.

Every kind is one file (or one filesystem state) with a declared outcome under vitdata's policy:

====  ===================  ==========================================================  ==================
kind  name                 what it is                                                  outcome
====  ===================  ==========================================================  ==================
00    good                 baseline RGB JPEG                                           decode
01    empty                0-byte file                                                 truncated
02    truncated_jpeg       a JPEG cut at 60 % of its bytes (no EOI marker)             truncated
03    random_bytes         4 KB of random bytes                                        unsupported_format
04    html                 an HTML error page saved as .jpg                            unsupported_format
05    soi_only             the 2-byte JPEG start marker and nothing else               truncated
06    flipped_byte         a JPEG with one entropy-coded byte changed after indexing   decode (checksum_mismatch when verified)
07    png_truncated_idat   a PNG cut inside its IDAT chunk                             truncated
08    zero_dims            a PNG whose IHDR claims 0 x 16 (valid CRC)                  unsupported_format
09    grayscale_jpeg       8-bit one-channel JPEG                                      decode
10    cmyk_jpeg            CMYK JPEG (Adobe marker)                                    decode
11    rgba_png             RGBA PNG (alpha dropped, not composited)                    decode
12    png16                16-bit grayscale PNG (scaled by 1/257)                      decode
13    exif_rotated         JPEG with EXIF orientation 6 (stored 48x32, shown 32x48)    decode
14    progressive_jpeg     progressive JPEG                                            decode
15    gif                  a GIF named .jpg                                            unsupported_format
16    palette_png          palette (P mode) PNG                                        decode
17    la_png               grayscale + alpha PNG                                       decode
18    bilevel_png          1-bit PNG                                                   decode
19    bomb_20k             ~100 KB PNG claiming 20000 x 20000                          too_many_pixels
20    bomb_144m            small PNG claiming 12000 x 12000 (144 Mpx)                  too_many_pixels (decodes with max_pixels >= 144e6)
21    tiny_1x1             1 x 1 JPEG                                                  decode
22    odd_size             223 x 17 JPEG                                               decode
23    webp                 a WebP named .jpg                                           unsupported_format
24    missing              indexed, then deleted                                       missing
25    directory            indexed, then replaced by a directory                       missing
26    size_changed         indexed, then grown by 100 bytes                            size_changed (tar: truncated)
27    bad_label            .cls holding ``cat``                                        bad_label (tar only)
28    fifo                 indexed, then replaced by a FIFO                            read_timeout
====  ===================  ==========================================================  ==================

In tar shards, kinds 24, 25 and 28 act on a one-sample shard of their own (a deleted shard, a directory
or a FIFO in its place); kind 26 is the last member of a shard cut short after indexing. Kind 27 has no
ImageFolder form (the label is the directory), so :func:`write_imagefolder_mixed` leaves it out.

Outcomes: ``"decode"`` or ``"error:<reason>"`` with a reason code from :data:`vitdata.errors.REASONS`.
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import tarfile
import zlib
from typing import NamedTuple

import numpy as np
from PIL import Image

from vitdata.data import selfid

KINDS = {
    0: "good", 1: "empty", 2: "truncated_jpeg", 3: "random_bytes", 4: "html", 5: "soi_only", 6: "flipped_byte",
    7: "png_truncated_idat", 8: "zero_dims", 9: "grayscale_jpeg", 10: "cmyk_jpeg", 11: "rgba_png", 12: "png16",
    13: "exif_rotated", 14: "progressive_jpeg", 15: "gif", 16: "palette_png", 17: "la_png", 18: "bilevel_png",
    19: "bomb_20k", 20: "bomb_144m", 21: "tiny_1x1", 22: "odd_size", 23: "webp", 24: "missing", 25: "directory",
    26: "size_changed", 27: "bad_label", 28: "fifo",
}
DECODE_KINDS = (0, 6, 9, 10, 11, 12, 13, 14, 16, 17, 18, 21, 22)   # 06 decodes unless checksums are verified
UNUSUAL_KINDS = (9, 10, 11, 12, 13, 14, 16, 17, 18, 21, 22)        # valid but unusual: backends must agree
_EXPECT = {
    1: "error:truncated", 2: "error:truncated", 3: "error:unsupported_format", 4: "error:unsupported_format",
    5: "error:truncated", 7: "error:truncated", 8: "error:unsupported_format", 15: "error:unsupported_format",
    19: "error:too_many_pixels", 20: "error:too_many_pixels", 23: "error:unsupported_format",
    24: "error:missing", 25: "error:missing", 26: "error:size_changed", 27: "error:bad_label",
    28: "error:read_timeout",
}
AFTER_INDEX = {6: "flip", 24: "delete", 25: "directory", 26: "grow", 28: "fifo"}


class Entry(NamedTuple):
    kind: int            # 0..28
    name: str            # KINDS[kind]
    expect: str          # "decode" | "error:<reason>" (ImageFolder form; see expected() for tar)
    data: bytes          # the bytes written (for 24-28: the good image the index sees first)
    after_index: str | None  # what happens to it once indexed: flip | delete | directory | grow | fifo


def expected(kind: int, layout: str = "imagefolder", *, verify: bool = False) -> str:
    """Declared outcome of ``kind`` in ``layout`` ("imagefolder" | "wds"), with checksum verification or not."""
    if kind == 6:
        return "error:checksum_mismatch" if verify else "decode"
    if kind == 26 and layout == "wds":
        return "error:truncated"
    if kind == 27 and layout == "imagefolder":
        return "n/a"
    return _EXPECT.get(kind, "decode")


# ------------------------------------------------------------------------------------------------
# File makers
# ------------------------------------------------------------------------------------------------

def natural_image(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    """A smooth colourful (H, W, 3) uint8 test picture: gradients plus a disc, so colour and orientation
    errors show as large differences while JPEG noise stays small."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 1, 3)
    img = np.stack([255 * x / max(1, w - 1), 255 * y / max(1, h - 1),
                    127 + 100 * np.sin(2 * np.pi * (x / w + y / h + phase[2]))], -1)
    disc = (x - w * 0.3) ** 2 + (y - h * 0.3) ** 2 < (min(h, w) * 0.2) ** 2
    img[disc] = (240, 30, 200)
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with_header(width: int, height: int, idat: bytes, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG whose IHDR says ``width`` x ``height`` around the given compressed IDAT payload (valid CRCs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png16_gray(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG of ``values`` (H, W) uint16, written by hand (big-endian rows, filter 0)."""
    h, w = values.shape
    raw = b"".join(b"\0" + values[r].astype(">u2").tobytes() for r in range(h))
    return png_with_header(w, h, zlib.compress(raw), bit_depth=16, color_type=0)


def bomb_png(width: int, height: int, target_bytes: int = 100_000) -> bytes:
    """A PNG claiming ``width`` x ``height`` RGB whose IDAT (deflated random rows) is about ``target_bytes``:
    a decoder that trusts the header allocates width*height*3 bytes."""
    rng = np.random.default_rng(19)
    raw = rng.integers(0, 256, target_bytes, dtype=np.uint8).tobytes()
    return png_with_header(width, height, zlib.compress(raw, 1))


def bilevel_144m_png(side: int = 12000) -> bytes:
    """A real, fully decodable 1-bit PNG of side x side (all black; a few tens of KB on disk)."""
    row = b"\0" + b"\0" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return png_with_header(side, side, idat, bit_depth=1, color_type=0)


def flip_entropy_byte(jpeg: bytes, seed: int = 6) -> bytes:
    """Change one byte inside the entropy-coded scan of a JPEG so that no marker is created or destroyed
    (decoders then decode it silently; only a stored checksum notices)."""
    sos = jpeg.rfind(b"\xff\xda")
    start = sos + 2 + struct.unpack(">H", jpeg[sos + 2:sos + 4])[0]
    end = jpeg.rfind(b"\xff\xd9")
    rng = np.random.default_rng(seed)
    data = bytearray(jpeg)
    for _ in range(1000):
        p = int(rng.integers(start + 4, end - 4))
        new = data[p] ^ 0x10
        if 0xFF not in (data[p - 1], data[p], new, data[p + 1]):
            data[p] = new
            return bytes(data)
    raise ValueError("no safe byte to flip")


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def make_bytes(kind: int) -> bytes:
    """The bytes of ``kind`` (for 24-28 and 06: the good image the index sees before it is changed)."""
    nat = natural_image()
    rgb = Image.fromarray(nat)
    if kind in (0, 6, 24, 25, 26, 27, 28):
        return _save(rgb, "JPEG", quality=95)
    if kind == 1:
        return b""
    if kind == 2:
        jpeg = _save(rgb, "JPEG", quality=95)
        return jpeg[:int(len(jpeg) * 0.6)]
    if kind == 3:
        return np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if kind == 4:
        return b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
    if kind == 5:
        return b"\xff\xd8"
    if kind == 7:
        png = _save(rgb, "PNG")
        idat = png.find(b"IDAT")
        n = struct.unpack(">I", png[idat - 4:idat])[0]
        return png[:idat + 4 + n // 2]
    if kind == 8:
        return png_with_header(0, 16, zlib.compress(b"\0" * 16))
    if kind == 9:
        return _save(rgb.convert("L"), "JPEG", quality=95)
    if kind == 10:
        return _save(rgb.convert("CMYK"), "JPEG", quality=95)
    if kind == 11:
        a = np.dstack([nat, np.linspace(0, 255, nat.shape[1], dtype=np.uint8)[None, :].repeat(nat.shape[0], 0)])
        return _save(Image.fromarray(a, "RGBA"), "PNG")
    if kind == 12:
        g = np.asarray(rgb.convert("L"), np.uint16) * 257      # full 16-bit range: value/257 is the 8-bit image
        g = g + np.random.default_rng(12).integers(0, 120, g.shape).astype(np.uint16)  # low bits carry noise
        return png16_gray(np.minimum(g, 65535).astype(np.uint16))
    if kind == 13:
        stored = rgb.transpose(Image.Transpose.ROTATE_90)       # shown upright after orientation 6 (rotate 270)
        return _save(stored, "JPEG", quality=95, exif=exif_orientation(6))
    if kind == 14:
        return _save(rgb, "JPEG", quality=95, progressive=True)
    if kind == 15:
        return _save(rgb, "GIF")
    if kind == 16:
        return _save(rgb.quantize(64), "PNG")
    if kind == 17:
        return _save(rgb.convert("LA"), "PNG")
    if kind == 18:
        return _save(rgb.convert("1"), "PNG")
    if kind == 19:
        return bomb_png(20000, 20000)
    if kind == 20:
        return bilevel_144m_png(12000)
    if kind == 21:
        return _save(Image.new("RGB", (1, 1), (200, 60, 20)), "JPEG", quality=95)
    if kind == 22:
        return _save(Image.fromarray(natural_image(17, 223)), "JPEG", quality=95)
    if kind == 23:
        return _save(rgb, "WEBP", quality=90)
    raise ValueError(f"unknown kind {kind}")


def make_corpus(directory: str, kinds=None) -> list[Entry]:
    """Write one file per kind as ``DIR/KK_name.jpg`` (``.png`` where the content is PNG) and return the
    entries. Kinds with an ``after_index`` action are written in their good form: call
    :func:`apply_after_index` once the index exists."""
    os.makedirs(directory, exist_ok=True)
    out = []
    for k in (KINDS if kinds is None else kinds):
        data = make_bytes(k)
        out.append(Entry(k, KINDS[k], expected(k), data, AFTER_INDEX.get(k)))
        with open(os.path.join(directory, file_name(k)), "wb") as f:
            f.write(data)
    return out


def file_name(kind: int) -> str:
    ext = "png" if kind in (7, 8, 11, 12, 16, 17, 18, 19, 20) else "jpg"
    return f"{kind:02d}_{KINDS[kind]}.{ext}"


def change_file(path: str, action: str | None) -> None:
    """Apply an ``after_index`` action to ``path`` (a file or, in tar form, a shard)."""
    if action is None:
        return
    if action == "flip":
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(flip_entropy_byte(data))
    elif action.startswith("flip:"):   # a member of a tar shard, changed in place
        with tarfile.open(path) as tf:
            m = tf.getmember(action[5:])
        with open(path, "r+b") as f:
            f.seek(m.offset_data)
            flipped = flip_entropy_byte(f.read(m.size))
            f.seek(m.offset_data)
            f.write(flipped)
    elif action == "delete":
        os.unlink(path)
    elif action == "directory":
        os.unlink(path)
        os.mkdir(path)
    elif action == "grow":
        with open(path, "ab") as f:
            f.write(b"\0" * 100)
    elif action == "fifo":
        os.unlink(path)
        os.mkfifo(path)
    elif action == "cut":  # cut the shard in the middle of its last member's payload
        with tarfile.open(path) as tf:
            last = tf.getmembers()[-1]
        with open(path, "r+b") as f:
            f.truncate(last.offset_data + last.size // 2)
    else:
        raise ValueError(f"unknown action {action!r}")


# ------------------------------------------------------------------------------------------------
# Mixed datasets
# ------------------------------------------------------------------------------------------------

class Mixed(NamedTuple):
    root: str                       # ImageFolder root or shard directory
    bad: dict[int, str]             # kind -> key that the index describes (ImageFolder path or tar key)
    actions: list[tuple[str, str]]  # (path, action) to apply after indexing


def write_imagefolder_mixed(root: str, num_good: int, kinds=None, *, num_classes: int = 4, size: int = 32) -> Mixed:
    """A self-identifying ImageFolder tree of ``num_good`` JPEGs plus one file per kind (27 left out), spread
    over the class directories as ``class_XX/bad_KK_name.ext``. Run ``apply(mixed)`` after indexing."""
    selfid.write_imagefolder(root, num_good, num_classes=num_classes, size=size)
    kinds = [k for k in (KINDS if kinds is None else kinds) if k != 27]
    bad, actions = {}, []
    for j, k in enumerate(kinds):
        path = os.path.join(root, f"class_{j % num_classes:02d}", "bad_" + file_name(k))
        with open(path, "wb") as f:
            f.write(make_bytes(k))
        bad[k] = os.path.abspath(path)
        if k in AFTER_INDEX:
            actions.append((path, AFTER_INDEX[k]))
    return Mixed(os.path.abspath(root), bad, actions)


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 0
    tf.addfile(ti, io.BytesIO(data))


def write_shards_mixed(directory: str, num_good: int, kinds=None, *, num_classes: int = 4, size: int = 32,
                       per_shard: int = 64) -> Mixed:
    """Tar shards of ``num_good`` self-identifying samples (keys ``%08d``) with the bad kinds mixed in.

    Kinds 06, 01-05, 07-23 and 27 are members among the good ones (key ``bad_KK_name``); 24, 25 and 28 each
    get a one-sample shard ``zz-KK.tar`` that is deleted / replaced by a directory / by a FIFO after
    indexing; 26 is the last sample of shard ``zy-26.tar``, cut short after indexing. ``classes.json``
    lists ``num_classes`` classes. Run ``apply(mixed)`` after indexing.
    """
    os.makedirs(directory, exist_ok=True)
    kinds = list(KINDS if kinds is None else kinds)
    inline = [k for k in kinds if k not in (24, 25, 26, 28)]
    rng = np.random.default_rng(0)
    slots = {int(p): k for p, k in zip(rng.choice(num_good + len(inline), len(inline), replace=False), inline)}
    bad, actions, members, gid, flips = {}, [], [], 0, []
    for pos in range(num_good + len(inline)):
        if pos in slots:
            k = slots[pos]
            key = f"bad_{k:02d}_{KINDS[k]}"
            ext = "png" if file_name(k).endswith("png") else "jpg"
            members.append((key, ext, make_bytes(k), b"cat" if k == 27 else str(k % num_classes).encode()))
            bad[k] = key
            if k == 6:
                flips.append(f"{key}.{ext}")
        else:
            label = gid % num_classes
            img = selfid.make_image(gid, label, size)
            members.append((f"{gid:08d}", "jpg", selfid.encode(img), str(label).encode()))
            gid += 1
    for s in range(0, len(members), per_shard):
        with tarfile.open(os.path.join(directory, f"mixed-{s // per_shard:06d}.tar"), "w", format=tarfile.USTAR_FORMAT) as tf:
            for key, ext, data, cls in members[s:s + per_shard]:
                _add(tf, f"{key}.{ext}", data)
                _add(tf, f"{key}.cls", cls)
                if f"{key}.{ext}" in flips:
                    actions.append((tf.name, f"flip:{key}.{ext}"))
    for k in (24, 25, 28):
        if k in kinds:
            path = os.path.join(directory, f"zz-{k:02d}.tar")
            key = f"bad_{k:02d}_{KINDS[k]}"
            with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
                _add(tf, f"{key}.jpg", make_bytes(k))
                _add(tf, f"{key}.cls", b"0")
            bad[k] = key
            actions.append((path, AFTER_INDEX[k]))
    if 26 in kinds:
        path = os.path.join(directory, "zy-26.tar")
        key = "bad_26_size_changed"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
            _add(tf, "zy_good.jpg", make_bytes(0))
            _add(tf, "zy_good.cls", b"0")
            _add(tf, f"{key}.cls", b"0")        # label first, so the image is the shard's last payload
            _add(tf, f"{key}.jpg", make_bytes(26))
        bad[26] = key
        actions.append((path, "cut"))
    with open(os.path.join(directory, "classes.json"), "w") as f:
        f.write("[" + ", ".join(f'"class_{c:02d}"' for c in range(num_classes)) + "]")
    return Mixed(os.path.abspath(directory), bad, actions)


def apply(mixed: Mixed) -> None:
    """Make the after-indexing changes (delete, directory, grow, FIFO, flip, cut)."""
    for path, action in mixed.actions:
        change_file(path, action)


def remove(path: str) -> None:
    """Remove a corpus tree, FIFOs and directories included."""
    shutil.rmtree(path, ignore_errors=True)
