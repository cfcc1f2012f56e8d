"""JPEGs that libjpeg decodes with a "Corrupt JPEG data" warning, made from real encoder output (Pillow's
libjpeg) of self-identifying images: the corpus of the ``corrupt_data`` reason.

=================  =====================================================  ==========================================
kind               what it is                                             libjpeg says
=================  =====================================================  ==========================================
false_eoi          two bytes in the middle of the scan replaced by an     premature end of data segment
                   end-of-image marker (the rest of the scan follows)
restart_cut        a file with restart markers cut in its middle          premature end of data segment
                   interval and closed with an end-of-image marker
restart_order      the third restart marker names RST5 instead of RST2    found marker 0xd5 instead of RST2
=================  =====================================================  ==========================================

:data:`UNSEEN` are kinds that also make libjpeg warn but that no structure walk can see without decoding the
Huffman codes (the limit ``vitdata.data.jpegwalk`` documents): a scan cut and closed with an end-of-image marker
in a file without restart markers, and extra bytes after a scan's last MCU.
"""
from __future__ import annotations

import io
import re
import struct

from PIL import Image

from vitdata.data import selfid

KINDS = ("false_eoi", "restart_cut", "restart_order")
UNSEEN = ("plain_cut", "bytes_before_eoi")
_RST = re.compile(rb"\xff[\xd0-\xd7]")


def _encode(sample_id: int, label: int, size: int, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(selfid.make_image(sample_id, label, size)).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _scan_start(jpeg: bytes) -> int:
    sos = jpeg.find(b"\xff\xda")
    return sos + 2 + struct.unpack(">H", jpeg[sos + 2:sos + 4])[0]


def make(kind: str, sample_id: int = 0, label: int = 0, size: int = 48) -> bytes:
    """The bytes of one file of ``kind`` (one of :data:`KINDS` or :data:`UNSEEN`)."""
    if kind in ("false_eoi", "plain_cut", "bytes_before_eoi"):
        jpeg = _encode(sample_id, label, size)
        start, eoi = _scan_start(jpeg), jpeg.rfind(b"\xff\xd9")
        mid = start + (eoi - start) // 2
        if kind == "false_eoi":
            return jpeg[:mid] + b"\xff\xd9" + jpeg[mid + 2:]
        if kind == "plain_cut":
            return jpeg[:mid] + b"\xff\xd9"
        return jpeg[:eoi] + b"\x00\x00\x00" + jpeg[eoi:]
    jpeg = _encode(sample_id, label, size, restart_marker_blocks=2)
    marks = [m.start() for m in _RST.finditer(jpeg)]
    assert len(marks) >= 3, "the encoder wrote no restart markers"
    if kind == "restart_cut":
        return jpeg[:marks[len(marks) // 2] + 8] + b"\xff\xd9"
    if kind == "restart_order":
        data = bytearray(jpeg)
        data[marks[2] + 1] = 0xD5
        return bytes(data)
    raise ValueError(f"unknown kind {kind!r}")
