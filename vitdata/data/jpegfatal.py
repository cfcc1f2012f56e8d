"""libjpeg-turbo's fatal errors that the marker segments alone decide: a file that carries one is refused
before any decoder sees it (reason ``decode_error``, libjpeg's words as the detail), as DALI's decoder and
Pillow would refuse it, without the failed step and redo a decoder refusal costs on DALI.

Each rule below was checked against both decoders (DALI 2.4's CPU decoder and Pillow) on files built from
good photos (``docs/reliability.md``, header checks); libjpeg's words are DALI's:

* a scan header naming a component the frame lacks (``Invalid component ID 9 in SOS``), or naming 0 or more
  than 4 components, or more than its segment holds (``Bogus marker length``);
* a differential (hierarchical) frame, SOF5-7 or SOF13-15 (``Unsupported JPEG process: SOF type 0xc5``); a
  DCT frame whose sample precision is not 8 bits (``Unsupported JPEG data precision 12``: DALI's decoder and
  Pillow use libjpeg's 8-bit interface; DALI refuses a 12-bit frame without words);
* a frame component with a sampling factor 0 or above 4 (``Bogus sampling factors``), one whose factors do
  not divide the largest ones (``Fractional sampling not implemented yet``), an interleaved scan of more than
  10 blocks per MCU (``Sampling factors too large for interleaved scan``);
* a DQT segment too short for its tables (``Bogus marker length``), a DQT or DHT table index above 3 (``Bogus DQT index 4``, ``Bogus DHT index 4``), a DHT table whose symbol
  count exceeds 256 or its segment (``Bogus Huffman table definition``);
* a scan whose component uses a quantisation table not defined before it (``Quantization table 0x02 was not
  defined``) or a Huffman table never defined (``Huffman table 0x02 was not defined``; tables 0 and 1 are not
  needed: libjpeg loads the standard ones when a file has none, as Motion-JPEG frames do);
* a scan that uses a Huffman table whose code lengths over-subscribe the code space (libjpeg also reserves the
  all-ones code), or a DC table with a symbol above 15 (``Bogus Huffman table definition``);
* a progressive scan with invalid Ss, Se, Ah, Al (``Invalid progressive/lossless parameters Ss=0 Se=1 Ah=0
  Al=1``).

Tables a file defines but never uses are not checked beyond their index and length, as libjpeg does. Files
that libjpeg decodes with a warning (a sequential scan with odd Ss/Se, an inconsistent progression) are left
to ``vitdata.data.jpegwalk``'s warnings or to the decoder. Arithmetic-coded and lossless frames get the
structural rules only (libjpeg-turbo 3 decodes lossless frames of any precision, so SOF3 and SOF11 are left
to the decoder).
"""
from __future__ import annotations

from operator import mul

_HUFFMAN_DCT = frozenset({0xC0, 0xC1, 0xC2})   # baseline, extended, progressive (Huffman-coded DCT)
_DCT = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})
_DIFFERENTIAL = frozenset({0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF})   # hierarchical frames: no libjpeg decodes them
_MAX_BLOCKS_IN_MCU = 10
_WEIGHTS = tuple(1 << (16 - bits) for bits in range(1, 17))   # a code of ``bits`` bits takes 2**-bits of the space


def _bogus_huffman(counts: bytes, symbols: bytes, is_dc: bool) -> bool:
    """libjpeg's check when it derives a decoding table: the codes of each length, assigned in order, must
    stay below the all-ones code of that length, which holds at every length when it holds at the longest
    (sum of counts[l] * 2**-l < 1, the all-ones code reserved); a DC table's symbols (bit counts) are at
    most 15."""
    return sum(map(mul, counts, _WEIGHTS)) >= 1 << 16 or (is_dc and bool(symbols) and max(symbols) > 15)


class Tables:
    """What libjpeg knows when a scan starts: the frame, the quantisation tables defined so far, each
    Huffman table (its ``bogus`` verdict) and which components have latched their quantisation table.
    Feed it each marker segment in file order; :meth:`segment` returns libjpeg's words for a fatal error."""

    def __init__(self):
        self.sof = None          # the frame's marker
        self.comps = {}          # component id -> (h, v, quantisation table)
        self.ids_unique = True
        self.quant = set()
        self.huff = {}           # (0 DC | 1 AC, index) -> bogus
        self.latched = set()

    def segment(self, marker: int, data: bytes, pos: int, length: int) -> str | None:
        """libjpeg's words for a fatal error in the segment of ``marker`` whose length field starts at ``pos``
        (``length`` bytes, the field included), or None."""
        if marker == 0xDB:
            return self._dqt(data, pos + 2, pos + length)
        if marker == 0xC4:
            return self._dht(data, pos + 2, pos + length)
        if marker == 0xDA:
            return self._sos(data, pos, length)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and self.sof is None:
            return self._sof(marker, data, pos, length)
        return None

    def _dqt(self, data: bytes, q: int, end: int) -> str | None:
        while q < end:
            pq, tq = data[q] >> 4, data[q] & 15
            if tq > 3:
                return f"Bogus DQT index {tq}"
            self.quant.add(tq)
            q += 129 if pq else 65
        return "Bogus marker length" if q > end else None

    def _dht(self, data: bytes, q: int, end: int) -> str | None:
        while q + 17 <= end:
            index = data[q]
            counts = data[q + 1:q + 17]
            count = sum(counts)
            if count > 256 or count > end - q - 17:
                return "Bogus Huffman table definition"
            is_ac = bool(index & 0x10)
            index -= 0x10 if is_ac else 0
            if index > 3:
                return f"Bogus DHT index {index}"
            self.huff[(int(is_ac), index)] = _bogus_huffman(counts, data[q + 17:q + 17 + count], not is_ac)
            q += 17 + count
        return None

    def _sof(self, marker: int, data: bytes, pos: int, length: int) -> str | None:
        self.sof = marker
        if marker in _DIFFERENTIAL:
            return f"Unsupported JPEG process: SOF type 0x{marker:02x}"
        if marker in _DCT and length >= 3 and data[pos + 2] != 8:
            return f"Unsupported JPEG data precision {data[pos + 2]}"
        nc = min(data[pos + 7], (length - 8) // 3) if length >= 8 else 0
        comps = self.comps
        for k in range(pos + 8, pos + 8 + 3 * nc, 3):
            h, v = data[k + 1] >> 4, data[k + 1] & 15
            if not (1 <= h <= 4 and 1 <= v <= 4):
                return "Bogus sampling factors"
            comps[data[k]] = (h, v, data[k + 2])
        self.ids_unique = len(comps) == nc
        if nc > 1:
            hmax, vmax = max(c[0] for c in comps.values()), max(c[1] for c in comps.values())
            if any(hmax % h or vmax % v for h, v, _ in comps.values()):
                return "Fractional sampling not implemented yet"
        return None

    def _sos(self, data: bytes, pos: int, length: int) -> str | None:
        ns = data[pos + 2] if length >= 3 else 0
        if length != 2 * ns + 6 or not 1 <= ns <= 4:
            return "Bogus marker length"
        scan = [(data[pos + 3 + 2 * k], data[pos + 4 + 2 * k]) for k in range(ns)]
        if self.ids_unique and len({c for c, _ in scan}) == ns:
            for cid, _ in scan:
                if cid not in self.comps:
                    return f"Invalid component ID {cid} in SOS"
        else:   # libjpeg renames duplicate component ids: leave such files to the decoder
            return None
        if self.sof not in _DCT:
            return None
        if ns > 1 and sum(self.comps[c][0] * self.comps[c][1] for c, _ in scan) > _MAX_BLOCKS_IN_MCU:
            return "Sampling factors too large for interleaved scan"
        for cid, _ in scan:
            tq = self.comps[cid][2]
            if cid not in self.latched and tq not in self.quant:
                return f"Quantization table 0x{tq:02x} was not defined"
            self.latched.add(cid)
        if self.sof not in _HUFFMAN_DCT:
            return None
        p = pos + 3 + 2 * ns
        ss, se, ah, al = data[p], data[p + 1], data[p + 2] >> 4, data[p + 2] & 15
        if self.sof == 0xC2:
            dc = ss == 0
            if (se != 0 if dc else (ss > se or se > 63 or ns != 1)) or (ah and al != ah - 1) or al > 13:
                return f"Invalid progressive/lossless parameters Ss={ss} Se={se} Ah={ah} Al={al}"
            uses = [(0, sel >> 4) for _, sel in scan] if dc and not ah else [] if dc else [(1, scan[0][1] & 15)]
        else:
            uses = [t for _, sel in scan for t in ((0, sel >> 4), (1, sel & 15))]
        for kind, index in uses:
            bogus = self.huff.get((kind, index))
            if bogus is None and index > 1:
                return f"Huffman table 0x{index:02x} was not defined"
            if bogus:
                return "Bogus Huffman table definition"
        return None
