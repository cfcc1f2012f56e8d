"""A JPEG's marker structure walked from the bytes alone, no pixel decoded: what makes a file unusable
(``truncated``; ``decode_error``: a fatal libjpeg error the headers decide, :mod:`vitdata.data.jpegfatal`),
and what libjpeg would decode with a ``Corrupt JPEG data`` warning (``corrupt_data``).

The walk visits every marker segment and skips each scan's entropy-coded data with a search for the next
marker: in coded data a 0xFF byte is followed by a stuffed 0x00, or is a restart marker RST0-7 or a fill byte,
so the next 0xFF followed by anything else ends the scan. One vectorised pass over the file finds every such
0xFF (:class:`_Markers`), then each scan's end and restart markers are two binary searches.

What it sees, and libjpeg's words for it:

* bytes where a marker is expected after a scan (``N extraneous bytes before marker 0xXX``);
* a scan cut short by a marker inside its coded data -- a false end-of-image marker followed by more
  coded data, or a marker that cannot follow a scan (``premature end of data segment``);
* restart markers out of order, or fewer restart intervals than the frame's MCUs need with a restart
  interval set (``found marker 0xXX instead of RSTn``, ``premature end of data segment``).

What it cannot see without decoding the Huffman codes: a scan cut and closed with an end-of-image marker
in a file without restart markers, and extra bytes after a scan's last MCU but before its end marker.
Those files still decode silently (libjpeg fills the missing MCUs with grey); ``docs/reliability.md`` says so.
"""
from __future__ import annotations

import math

import numpy as np

from vitdata.data.jpegfatal import Tables

# What may follow a scan: EOI, SOS, DHT, DQT, DRI, DAC, DNL, COM, APPn.
_AFTER_SCAN = frozenset({0xD9, 0xDA, 0xC4, 0xDB, 0xDD, 0xCC, 0xDC, 0xFE, *range(0xE0, 0xF0)})
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_FATAL_SEGMENTS = _SOF | {0xDB, 0xC4, 0xDA}    # what vitdata.data.jpegfatal reads: frame, DQT, DHT, SOS


def _frame(data: bytes, pos: int, length: int) -> dict:
    """The frame header at ``pos`` (after the marker; ``length`` its segment's): size and each component's
    sampling factors (as many components as the segment holds, whatever its count byte claims)."""
    h, w = (data[pos + 3] << 8) | data[pos + 4], (data[pos + 5] << 8) | data[pos + 6]
    nc = min(data[pos + 7], (length - 8) // 3)
    comps = {data[pos + 8 + 3 * k]: (data[pos + 9 + 3 * k] >> 4, data[pos + 9 + 3 * k] & 15) for k in range(nc)}
    return {"w": w, "h": h, "comps": comps}


def _mcus(frame: dict, scan_comps: list[int]) -> int:
    """MCUs in a scan of ``scan_comps`` (an interleaved scan: MCUs of the largest sampling factors; a scan
    of one component: that component's 8x8 blocks)."""
    comps = frame["comps"]
    hmax = max(max(c[0] for c in comps.values()), 1)
    vmax = max(max(c[1] for c in comps.values()), 1)
    if len(scan_comps) == 1 and scan_comps[0] in comps:
        hs, vs = comps[scan_comps[0]]
        return math.ceil(math.ceil(frame["w"] * hs / hmax) / 8) * math.ceil(math.ceil(frame["h"] * vs / vmax) / 8)
    return math.ceil(frame["w"] / (8 * hmax)) * math.ceil(frame["h"] / (8 * vmax))


class _Markers:
    """Where the 0xFF bytes that start a marker (``ends``) and the restart markers (``rst``, with their number
    0..7 in ``rst_num``) sit from byte ``start`` of ``data`` on: one NumPy pass (~0.1 ms for a 110 KB photo)."""

    def __init__(self, data: bytes, start: int):
        a = np.frombuffer(data, np.uint8)
        ff = np.flatnonzero(a[start:-1] == 0xFF) + start
        nxt = a[ff + 1]
        is_rst = (nxt >= 0xD0) & (nxt <= 0xD7)
        self.ends = ff[(nxt != 0) & (nxt != 0xFF) & ~is_rst]
        self.rst, self.rst_num = ff[is_rst], nxt[is_rst].astype(np.int64) - 0xD0

    def scan_end(self, start: int) -> tuple[int, list[int]]:
        """(position of the 0xFF of the marker that ends the coded data starting at ``start``, or -1; the
        restart markers met on the way, as 0..7)."""
        k = int(np.searchsorted(self.ends, start))
        end = int(self.ends[k]) if k < len(self.ends) else -1
        lo = int(np.searchsorted(self.rst, start))
        hi = int(np.searchsorted(self.rst, end)) if end >= 0 else len(self.rst)
        return end, self.rst_num[lo:hi].tolist()


def _restarts(seen: list[int], need: int | None) -> str | None:
    """The libjpeg warning for a scan's restart markers ``seen`` (0..7 in order met), or None."""
    for k, r in enumerate(seen):
        if r != k % 8:
            return f"found marker 0x{0xD0 + r:02x} instead of RST{k % 8} (restart markers out of order)"
    if need is not None and len(seen) < need:
        return (f"premature end of data segment (the scan has {len(seen) + 1} restart intervals, its MCUs need "
                f"{need + 1})")
    return None


def walk(data: bytes) -> tuple[str | None, str, str | None]:
    """(reason, detail, warning) for a JPEG whose frame header was found: ``reason`` ``truncated`` or
    ``unsupported_format`` when it cannot be used, ``decode_error`` when libjpeg would refuse it from its
    headers (``detail`` says why, in libjpeg's words for the latter), else None; ``warning``: libjpeg's
    ``Corrupt JPEG data`` words when it would decode with one, else None."""
    n, pos = len(data), 2
    frame, interval, warning, scans, marks, tables = None, 0, None, 0, None, Tables()
    while True:
        if pos >= n:
            where = "its last scan" if scans else "its header"
            return "truncated", f"JPEG ends inside {where} (no EOI marker)", warning
        if data[pos] != 0xFF:
            nxt = data.find(b"\xff", pos)
            if not scans:   # in the header: DALI's parser refuses it, so vitdata does too
                return "unsupported_format", f"JPEG marker expected at byte {pos}, found 0x{data[pos]:02x}", warning
            if nxt < 0 or nxt + 1 >= n:
                return "truncated", "JPEG ends after a scan without an EOI marker", warning
            warning = warning or f"{nxt - pos} extraneous bytes before marker 0x{data[nxt + 1]:02x}"
            pos = nxt
            continue
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            return "truncated", "JPEG ends inside a marker", warning
        marker, pos = data[pos], pos + 1
        if marker == 0xD9:
            if not scans:
                return "truncated", "JPEG without a scan (no SOS marker)", warning
            return None, "", warning or _cut_by_a_false_end(data[pos:], pos)
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue
        if pos + 2 > n:
            return "truncated", "JPEG ends inside a marker segment", warning
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2 or pos + length > n:
            return "truncated", f"JPEG segment 0xff{marker:02x} at byte {pos - 2} runs past the end", warning
        if marker in _FATAL_SEGMENTS:
            fatal = tables.segment(marker, data, pos, length)
            if fatal is not None:
                return "decode_error", f"{fatal} (libjpeg's fatal error, read from the headers)", warning
        if marker in _SOF and frame is None and length >= 8:
            frame = _frame(data, pos, length)
        elif marker == 0xDD and length >= 4:
            interval = (data[pos + 2] << 8) | data[pos + 3]
        if marker != 0xDA:
            pos += length
            continue
        scans += 1
        scan_comps = [data[pos + 3 + 2 * k] for k in range(min(data[pos + 2], (length - 3) // 2))] if length >= 3 else []
        start = pos + length
        if marks is None:
            marks = _Markers(data, start)
        end, seen = marks.scan_end(start)
        if end < 0:
            return "truncated", f"JPEG ends inside its last scan (no EOI marker after byte {start})", warning
        follow = data[end + 1]
        if interval or seen:
            need = (math.ceil(_mcus(frame, scan_comps) / interval) - 1) if interval and frame else None
            warning = warning or _restarts(seen, need)
        if follow not in _AFTER_SCAN:
            warning = warning or (f"premature end of data segment (marker 0x{follow:02x} at byte {end} inside the "
                                  f"coded data of scan {scans})")
        pos = end


def _cut_by_a_false_end(tail: bytes, after: int) -> str | None:
    """A premature end: the end-of-image marker the walk stopped at (``after``: the byte after it) is followed
    by more coded data (``tail``: bytes without a marker up to a final EOI), so a corrupted byte pair made a
    false EOI in the middle of a scan. Data after a real EOI (a second image, a video, padding) has other
    markers or no final EOI."""
    tail = tail.rstrip(b"\0")
    if len(tail) < 4 or not tail.endswith(b"\xff\xd9"):
        return None
    if _Markers(tail, 0).scan_end(0)[0] != len(tail) - 2:
        return None
    return f"premature end of data segment (an end-of-image marker at byte {after - 2}, {len(tail) - 2} bytes of " \
           f"coded data after it)"
