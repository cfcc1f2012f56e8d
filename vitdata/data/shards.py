"""WebDataset shards: scanning ``.tar`` files by their 512-byte headers into the sample index, and the
label checks of a layout whose class count may come from the labels themselves.

Only the tiny ``.cls`` payloads are read; member names are never used as filesystem paths; links,
devices and FIFOs inside a tar are counted per sample (``non_regular_member``); damage inside a shard
keeps the samples before it. :func:`scan` fills an index builder; :mod:`vitdata.data.index` owns the index.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np

from vitdata.errors import DataError

IMAGE_EXTS = ("jpg", "jpeg", "png")
BAD_LABEL = -1                 # label of a sample indexed with bad_labels="mark"
# Largest class index a .cls may hold (2^24 - 1): above every classification label space in use (face
# identities: a few million) and small enough that a class list of that length fits in memory.
MAX_LABEL = (1 << 24) - 1
# Without classes.json, a label is refused when it lies beyond a gap in the labels seen: more than
# LABEL_GAP above the next smaller label seen, among other conditions (see labels_beyond_a_gap).
LABEL_GAP = 1024
MEMBER_CAP = 64 << 20          # largest tar member accepted (bytes); larger claims are refused unread
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
LABEL_MEMBERS = ("cls", "class", "label", "txt")   # members holding the label as ASCII digits
_JSON_CAP = 1 << 16            # largest .json label member read
_BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")
_NON_REGULAR = {b"1": "hard link", b"2": "symlink", b"3": "character device", b"4": "block device",
                b"6": "FIFO"}


def _expand_braces(pattern: str) -> list[str]:
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    a, b = m.group(1), m.group(2)
    width = len(a) if len(a) == len(b) or a.startswith("0") else 0
    out = []
    for k in range(int(a), int(b) + 1):
        out += _expand_braces(pattern[:m.start()] + str(k).zfill(width) + pattern[m.end():])
    return out


def _parse_octal(field: bytes, path: str, off: int) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes past 8 GB
        return int.from_bytes(field[1:], "big") | ((field[0] & 0x3F) << (8 * (len(field) - 1)))
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise DataError("bad_header", path, offset=off, detail=f"non-numeric field {field!r}") from None


def _header_ok(hdr: bytes) -> bool:
    stored = hdr[148:156].split(b"\0", 1)[0].strip()
    try:
        want = int(stored, 8)
    except ValueError:
        return False
    return sum(hdr[:148]) + 8 * 32 + sum(hdr[156:]) == want


def _pax_path(data: bytes) -> str | None:
    path, pos = None, 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            break
        try:
            n = int(data[pos:sp])
        except ValueError:
            break
        rec = data[sp + 1:pos + n - 1]
        if rec.startswith(b"path="):
            path = rec[5:].decode("utf-8", "surrogateescape")
        pos += n
    return path


def _safe_key(name: str) -> tuple[str, bool]:
    """WebDataset key and whether it had to be normalised (absolute, '..', control characters)."""
    clean = "".join(c if c.isprintable() else "?" for c in name)
    parts = [p for p in clean.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    clean = "/".join(parts)
    return clean, clean != name


def _read_label(fd: int, off: int, n: int, ext: str, field: str | None) -> tuple[int, str]:
    """(label, why it is bad) of one label member; label BAD_LABEL when it is not a usable integer."""
    if field is None:
        raw = os.pread(fd, n, off) if n <= 64 else b"<too long>"
        text = raw.strip()
        if not text.isdigit():
            return BAD_LABEL, f".{ext} holds {raw[:20]!r}, expected ASCII digits"
    else:
        if n > _JSON_CAP:
            return BAD_LABEL, f".json member of {n} bytes (cap {_JSON_CAP})"
        try:
            value = json.loads(os.pread(fd, n, off))
            for part in field.split("."):
                value = value[part]
        except (ValueError, KeyError, TypeError, IndexError):
            return BAD_LABEL, f".json has no integer field {field!r}"
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
            return BAD_LABEL, f".json field {field!r} holds {str(value)[:20]!r}, expected a non-negative integer"
        text = str(value).strip().encode()
    # at most 64 digits here; a label past MAX_LABEL would make a class list of that length
    if len(text) > 64 or int(text) > MAX_LABEL:
        return BAD_LABEL, (f".{ext} holds {_short_number(text)}, above the largest label vitdata accepts "
                           f"({MAX_LABEL})")
    return int(text), ""


def _scan_shard(fid: int, path: str, size: int, b, seen: dict, skipped: list,
                member_cap: int, mark_bad_labels: bool = False, label_ext: str = "cls",
                label_field: str | None = None) -> None:
    """Add the samples of one shard to ``b``. Structural damage (truncation, bad header) keeps the
    samples before it and records the rest in ``skipped``; semantic errors raise DataError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        samples = _ShardSamples(fd, fid, path, b, seen, skipped, member_cap, mark_bad_labels, label_ext, label_field)
        for pos, name, typeflag, data_off, n in _members(fd, path, size, skipped):
            samples.member(pos, name, typeflag, data_off, n)
        samples.close_group()
    finally:
        os.close(fd)


def _members(fd: int, path: str, size: int, skipped: list):
    """(header offset, name, typeflag, data offset, size) of each member of the tar at ``fd`` that names a
    file-like entry, GNU long names and pax paths resolved; stops at the end marker, or at damage, which is
    recorded in ``skipped`` (the members before it are kept)."""
    pos, long_name, pax_name = 0, None, None
    while True:
        hdr = os.pread(fd, _BLOCK, pos)
        if len(hdr) < _BLOCK:
            if hdr.strip(b"\0") or pos < size:
                skipped.append({"path": path, "offset": pos, "reason": "truncated",
                                "detail": "shard ends inside a header"})
            return
        if hdr == b"\0" * _BLOCK:
            return
        if not _header_ok(hdr):
            skipped.append({"path": path, "offset": pos, "reason": "bad_header",
                            "detail": "header checksum mismatch; rest of the shard not read"})
            return
        n = _parse_octal(hdr[124:136], path, pos)
        typeflag = hdr[156:157]
        data_off = pos + _BLOCK
        if data_off + n > size:
            skipped.append({"path": path, "offset": pos, "reason": "truncated",
                            "detail": f"member claims {n} bytes, only {size - data_off} remain"})
            return
        if typeflag == b"L":
            long_name = os.pread(fd, min(n, 65536), data_off).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif typeflag == b"x":
            pax_name = _pax_path(os.pread(fd, min(n, 1 << 20), data_off)) or pax_name
        elif typeflag not in (b"g", b"5", b"K"):
            name = pax_name or long_name
            if name is None:
                raw = hdr[0:100].split(b"\0", 1)[0]
                prefix = hdr[345:500].split(b"\0", 1)[0] if hdr[257:262] == b"ustar" else b""
                name = ((prefix + b"/" + raw) if prefix else raw).decode("utf-8", "surrogateescape")
            long_name = pax_name = None
            yield pos, name, typeflag, data_off, n
        pos = data_off + (n + _BLOCK - 1) // _BLOCK * _BLOCK


class _ShardSamples:
    """Groups one shard's members into samples by WebDataset key (consecutive members sharing a key) and
    adds each complete sample to the index builder."""

    def __init__(self, fd: int, fid: int, path: str, b, seen: dict, skipped: list, member_cap: int,
                 mark_bad_labels: bool, label_ext: str, label_field: str | None):
        self.fd, self.fid, self.path, self.b, self.seen, self.skipped = fd, fid, path, b, seen, skipped
        self.member_cap, self.mark_bad_labels = member_cap, mark_bad_labels
        self.label_ext, self.label_field = label_ext, label_field
        self.key, self.group, self.group_off = None, {}, 0   # the sample being read: ext -> (offset, size)

    def member(self, pos: int, name: str, typeflag: bytes, data_off: int, n: int) -> None:
        """Record one member: a skip for a normalised key or a non-regular entry; an image or label of a sample."""
        dirname, _, base = name.rpartition("/")
        stem, dot, ext = base.partition(".")
        key, changed = _safe_key((dirname + "/" if dirname else "") + stem)
        ext = ext.lower()
        regular = typeflag in _REGULAR
        part = ext in IMAGE_EXTS + (self.label_ext,) and dot
        if changed and regular:
            self.skipped.append({"path": self.path, "offset": pos, "reason": "bad_key",
                                 "detail": f"member name {name!r} normalised to key {key!r}"})
        if not regular:  # a link, device or FIFO is never read or followed
            kind = _NON_REGULAR.get(typeflag, f"type {typeflag!r}")
            self.skipped.append({"path": self.path, "offset": pos, "reason": "non_regular_member",
                                 "detail": f"{name!r} is a {kind}" + (f"; sample {key!r} passed over" if part else "")})
        if not part:
            return
        if key != self.key:
            self.close_group()
            self.key, self.group, self.group_off = key, {}, pos
        group = self.group
        if not regular:  # the sample is passed over, like one with an oversized member
            group["_dropped"] = (0, 0)
        elif n > self.member_cap:  # refused before any allocation; the whole sample is passed over
            self.skipped.append({"path": self.path, "offset": pos, "reason": "member_too_large",
                                 "detail": f"{name!r} claims {n} bytes (cap {self.member_cap})"})
            group["_dropped"] = (0, 0)
        elif ext in group or (ext in IMAGE_EXTS and any(e in group for e in IMAGE_EXTS)):
            raise DataError("duplicate_key", self.path, offset=pos, detail=f"second {ext!r} member for key {key!r}")
        else:
            group[ext] = (data_off, n)

    def close_group(self) -> None:
        """Add the sample being read (image + label) to the index, or refuse it (DataError naming why)."""
        key, group, path, label_ext = self.key, self.group, self.path, self.label_ext
        if key is None or "_dropped" in group:
            return
        img = [e for e in IMAGE_EXTS if e in group]
        if label_ext not in group and not img:
            return
        if label_ext not in group:
            raise DataError("missing_label", path, offset=group[img[0]][0] - _BLOCK,
                            detail=f"sample {key!r} has an image but no .{label_ext} member" + (
                                " (labels in another member: LoaderConfig(label_member='class' | 'label' | "
                                "'txt' | 'json:FIELD'))" if label_ext == "cls" else ""))
        if not img:
            raise DataError("missing_image", path, offset=group[label_ext][0] - _BLOCK,
                            detail=f"sample {key!r} has a .{label_ext} but no .jpg/.jpeg/.png member")
        if key in self.seen:
            raise DataError("duplicate_key", path, offset=self.group_off,
                            detail=f"key {key!r} already seen in {self.seen[key]}")
        cls_off, cls_len = group[label_ext]
        label, why = _read_label(self.fd, cls_off, cls_len, label_ext, self.label_field)
        if label == BAD_LABEL:
            if not self.mark_bad_labels:
                raise DataError("bad_label", path, offset=cls_off - _BLOCK, detail=f"sample {key!r}: {why}")
            self.skipped.append({"path": path, "offset": cls_off - _BLOCK, "reason": "bad_label",
                                 "detail": f"sample {key!r}: {why}; indexed with label -1"})
        self.seen[key] = f"{path}@{self.group_off}"
        off, n = group[img[0]]
        self.b.add(self.fid, off, n, label, key)


def _find_shards(source: str) -> list[str]:
    if any(c in source for c in "{}"):
        paths = _expand_braces(source)
    elif os.path.isdir(source):
        paths = sorted(os.path.join(source, n) for n in os.listdir(source) if n.lower().endswith(SHARD_SUFFIXES))
    else:
        paths = [source]
    for p in paths:
        if not os.path.exists(p):
            raise DataError("not_found", p, detail="shard does not exist")
        if not os.path.isfile(p):
            raise DataError("unreadable", p, detail="not a regular file")
    return [os.path.abspath(p) for p in paths]


def _plain_shards(shards: list[str]) -> tuple[list[str], dict]:
    """Gzip shards replaced by their inflated copies in the cache (see vitdata.data.gzshards), and the
    compressed files' mtimes (an index built from them is stale when one changes)."""
    from vitdata.data.gzshards import inflate, is_gz

    out, extra = [], {}
    for p in shards:
        if is_gz(p):
            st = os.stat(p)
            extra[p] = [st.st_mtime_ns, st.st_ctime_ns]
            p = inflate(p)
        out.append(p)
    return out, extra


def _short_number(text: bytes) -> str:
    """ASCII digits for a message: a long number as its first digits and its length."""
    return text.decode() if len(text) <= 20 else f"{text[:12].decode()}... ({len(text)} digits)"


def labels_beyond_a_gap(labels: np.ndarray) -> tuple[int, int] | None:
    """(first refused label, the label seen just below it, or -1 when all are refused), or None.

    Without classes.json the class count is the largest label + 1, so one corrupt ``.cls`` (``1000000``
    among labels 0..9) would make a million classes. A corrupt label is a few samples far above the bulk
    of the labels; real label sets are dense, or spread over their range. Going up the distinct labels
    seen, a label ``v`` whose next smaller distinct label is ``p`` lies *beyond a gap* when

    * ``v - p > LABEL_GAP`` (1,024) and ``v - p > p + 1`` (it more than doubles the range 0..p), and
    * fewer samples have a label ``>= v`` than a label ``<= p`` (the labels above are the minority).

    The first such ``v`` and every larger label are refused. The smallest label ``u0`` is itself beyond a
    gap (all are refused) when ``u0 >= LABEL_GAP``, it is more than 8 times the mean spacing of the
    distinct labels kept, and more than their span (the empty range 0..u0-1 is the larger): a shard
    holding classes 5000-5050 only, or one label of 1024 or more.

    Labels up to 1,024 are never refused, so any subset of a dataset of at most 1,025 classes (CIFAR,
    ImageNet-1k) passes. ImageNet-21k passes whole, and so do random samples of it (measured: 0.1% of
    20-sample draws refused, none of 50 or more; of Zipf-distributed draws, 2% at 100 samples, none at
    200).
    """
    u, counts = np.unique(labels[labels >= 0], return_counts=True)
    if u.size == 0:
        return None
    below = np.concatenate([[-1], u[:-1]])
    jump = u - below
    n_below = np.concatenate([[0], np.cumsum(counts)[:-1]])
    far = np.flatnonzero((jump > LABEL_GAP) & (jump > below + 1) & (counts.sum() - n_below < n_below))
    end = int(far[0]) if far.size else u.size           # the labels kept: u[:end]
    spacing = (u[end - 1] - u[0]) / (end - 1) if end > 1 else 0.0
    if u[0] >= LABEL_GAP and u[0] > 8 * max(spacing, 1.0) and u[0] > u[end - 1] - u[0]:
        return int(u[0]), -1
    return (int(u[end]), int(below[end])) if far.size else None


def _refuse_labels_beyond_a_gap(b, shards: list[str], skipped: list, mark: bool, classes_file: str) -> None:
    """Apply :func:`labels_beyond_a_gap` to the scanned samples: raise ``bad_label``, or with ``mark`` index
    the refused samples with label -1 (listed in ``skipped``). A gap below every label always raises."""
    labels = np.asarray(b.label, np.int64)
    gap = labels_beyond_a_gap(labels)
    if gap is None:
        return
    first, below = gap
    bad = np.flatnonzero(labels >= first)
    top = int(labels.max())
    seen = "no smaller label" if below < 0 else f"the next smaller label seen is {below}"
    why = (f"labels from {first} up lie beyond a gap ({seen}): without a class list the class count would be "
           f"{top + 1:,} from {np.unique(labels[labels >= 0]).size} distinct labels. If the labels are right, "
           f"state the class count: put a classes.json (a JSON list of the class names, index = label) at "
           f"{classes_file}, or pass num_classes")
    i = int(bad[0])
    if not mark or below < 0:
        raise DataError("bad_label", shards[b.file_id[i]], offset=b.offset[i],
                        detail=f"sample {b.keys[i]!r} has label {b.label[i]} ({bad.size} sample(s) refused): {why}")
    for i in bad.tolist():
        skipped.append({"path": shards[b.file_id[i]], "offset": b.offset[i], "reason": "bad_label",
                        "detail": f"sample {b.keys[i]!r} has label {b.label[i]}: {why}; indexed with label -1"})
        b.label[i] = BAD_LABEL


def read_classes(path: str) -> list[str]:
    """classes.json: a list of names, or an object with a "classes" list."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError("unreadable", path, detail=f"not a JSON class list ({e})") from e
    if isinstance(data, dict):
        data = data.get("classes")
    if not isinstance(data, list) or not data:
        raise DataError("unreadable", path, detail='expected a list of class names or {"classes": [...]}')
    return [str(c) for c in data]


def is_wds(source: str) -> bool:
    if "{" in source or source.lower().endswith(SHARD_SUFFIXES):
        return True
    return os.path.isdir(source) and any(n.lower().endswith(SHARD_SUFFIXES) for n in os.listdir(source))


def parse_label_member(label: str) -> tuple[str, str | None]:
    """``"cls"`` | ``"class"`` | ``"label"`` | ``"txt"`` (a member holding an integer) | ``"json:FIELD"`` (an
    integer field of the ``.json`` member; ``a.b`` for a nested one) -> (member extension, json field)."""
    if label in LABEL_MEMBERS:
        return label, None
    if label.startswith("json:") and label[5:]:
        return "json", label[5:]
    raise ValueError(f"label member must be one of {LABEL_MEMBERS} or 'json:FIELD', got {label!r}")


def scan(source: str, b, num_classes: int | None, member_cap: int, mark_bad_labels: bool = False,
         label: str = "cls", classes: list[str] | None = None) -> dict:
    """Scan the shards of ``source`` into the index builder ``b`` (its ``add`` and its lists) and return the
    index fields of the layout: ``sources``, ``source_stats`` (size, mtime_ns, ctime_ns), ``classes``,
    ``skipped``, ``extra_stats`` (path: [mtime_ns, ctime_ns]).
    ``label``: the member holding each sample's label (:func:`parse_label_member`). Gzip shards are read
    from their inflated copies (:mod:`vitdata.data.gzshards`). ``classes``: the dataset's class list (another
    split's): a classes.json beside the shards must list the same classes, and a label outside it is a bad
    label by the usual rule."""
    shards = _find_shards(source)
    if not shards:
        raise DataError("empty_dataset", source, detail="no .tar shards found")
    shards, gz_stats = _plain_shards(shards)
    label_ext, label_field = parse_label_member(label)
    seen, skipped, stats = {}, [], []
    for fid, p in enumerate(shards):
        try:
            st = os.stat(p)
            _scan_shard(fid, p, st.st_size, b, seen, skipped, member_cap, mark_bad_labels, label_ext, label_field)
        except PermissionError as e:
            raise DataError("unreadable", p, detail=str(e.strerror)) from e
        stats.append((st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    if not b.label:
        raise DataError("empty_dataset", source, detail=f"the shards hold no KEY.(jpg|jpeg|png) + KEY.{label_ext} "
                        f"samples" + ("" if label != "cls" else " (another label member: LoaderConfig(label_member="
                                      "'class' | 'label' | 'txt' | 'json:FIELD'))"))
    classes_file = os.path.join(os.path.dirname(_find_shards(source)[0]), "classes.json")
    extra = dict(gz_stats)
    if os.path.isfile(classes_file):
        listed = read_classes(classes_file)
        if classes is not None and listed != list(classes):
            raise DataError("bad_label", classes_file, detail=f"lists {len(listed)} classes that differ from the "
                            f"dataset's class list ({len(classes)} classes, from its training split)")
        classes = listed
        st = os.stat(classes_file)
        extra[classes_file] = [st.st_mtime_ns, st.st_ctime_ns]
    elif classes is not None:
        classes = list(classes)
    elif num_classes is not None:
        classes = [str(c) for c in range(num_classes)]
    else:
        _refuse_labels_beyond_a_gap(b, shards, skipped, mark_bad_labels, classes_file)
        classes = [str(c) for c in range(max(max(b.label) + 1, 1))]
    if num_classes is not None and num_classes != len(classes):
        raise DataError("bad_label", classes_file, detail=f"{len(classes)} classes listed, {num_classes} expected")
    labels = np.asarray(b.label)
    bad = np.flatnonzero(labels >= len(classes))
    if bad.size and mark_bad_labels:
        for i in bad.tolist():
            skipped.append({"path": shards[b.file_id[i]], "offset": b.offset[i], "reason": "bad_label",
                            "detail": f"sample {b.keys[i]!r} has label {b.label[i]}, outside [0, {len(classes)}); "
                                      f"indexed with label -1"})
            b.label[i] = BAD_LABEL
    elif bad.size:
        i = int(bad[0])
        raise DataError("bad_label", shards[b.file_id[i]], offset=b.offset[i], sample_id=i,
                        detail=f"sample {b.keys[i]!r} has label {labels[i]}, outside [0, {len(classes)})")
    return {"sources": shards, "source_stats": np.asarray(stats, np.int64), "classes": classes, "skipped": skipped,
            "extra_stats": extra}


# Bytes around a probed sample's image member that :func:`probe` hashes: before its data (its 512-byte header
# and, in the usual KEY.cls-then-KEY.jpg or KEY.jpg-then-KEY.cls order, the label member) and after its
# padded end (the next member's header and the first bytes of its payload).
PROBE_BEFORE, PROBE_AFTER = 1536, 1024


def probe(path: str, spans: list[tuple[int, int]]) -> str:
    """A cheap content check of one shard: blake2b-128 (hex) of its first 512 bytes and of the bytes around
    the image members at ``spans`` ((data offset, length) of its first and last samples), a few preads
    in all. A shard replaced by another of the same size (its mtime kept) has other names, sizes or labels
    there; a change elsewhere in a shard also changes its ctime, which the index keeps too."""
    h = hashlib.blake2b(digest_size=16)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        h.update(os.pread(fd, _BLOCK, 0))
        for off, n in spans:
            start = max(0, off - PROBE_BEFORE)
            h.update(os.pread(fd, off - start, start))
            h.update(os.pread(fd, PROBE_AFTER, off + (n + _BLOCK - 1) // _BLOCK * _BLOCK))
    finally:
        os.close(fd)
    return h.hexdigest()
