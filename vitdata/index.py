"""The sample index: where every encoded image lives, its label and key, in compact arrays.

Two layouts are read as they are, without conversion:

* ImageFolder trees ``ROOT/<class>/<file>`` (classes sorted as torchvision does, files found
  recursively, ``.jpg/.jpeg/.png`` in any case); one sample per file, offset 0.
* WebDataset tar shards (``KEY.jpg|jpeg|png`` + ``KEY.cls`` with the class index as ASCII digits),
  given as a directory of ``.tar`` files, a brace pattern (``train-{000000..000004}.tar``) or one
  ``.tar``. Shards are scanned by their 512-byte headers; image payloads are never read (the tiny
  ``.cls`` payload is). Member names are never used as filesystem paths.

For sample ``i`` the index stores ``file_id[i]`` (into ``sources``), ``offset[i]`` and ``length[i]``
of the encoded bytes inside that file, ``label[i]`` and ``key(i)``. It is persisted as one ``.npz``
(no pickles) holding the arrays and a JSON header (format version, source paths with sizes and
mtimes), written atomically, and rebuilt with a message when a source has changed since.

``SampleReader`` returns the bytes of sample ``i`` with ``os.pread``: thread-safe, and safe across
processes (each process opens its own descriptors; a pickled reader carries none).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import stat
import sys
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from vitdata.errors import DataError, StateError
from vitdata.io import atomic_write

FORMAT_VERSION = 1
IMAGE_EXTS = ("jpg", "jpeg", "png")
BAD_LABEL = -1                 # label of a sample indexed with bad_labels="mark"
# Largest class index a .cls may hold (2^24 - 1): above every classification label space in use (face
# identities: a few million) and small enough that a class list of that length fits in memory.
MAX_LABEL = (1 << 24) - 1
# Without classes.json, a label is refused when it lies beyond a gap in the labels seen: more than
# LABEL_GAP above the next smaller label seen, among other conditions (see _labels_beyond_a_gap).
LABEL_GAP = 1024
MEMBER_CAP = 64 << 20          # largest tar member accepted (bytes); larger claims are refused unread
_BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")
_NON_REGULAR = {b"1": "hard link", b"2": "symlink", b"3": "character device", b"4": "block device",
                b"6": "FIFO"}


# ----------------------------------------------------------------------------------------------------------
# The index
# ----------------------------------------------------------------------------------------------------------

@dataclass
class SampleIndex:
    """Arrays of length N (one row a sample) plus the source description.

    kind: "imagefolder" or "wds". spec: the source as given, resolved to absolute paths.
    sources: file paths by file id (ImageFolder: one per sample; wds: one per shard).
    classes: class names (ImageFolder: directory names; wds: from classes.json beside the shards, or "0".."C-1").
    skipped: what the scan passed over, as dicts {path, offset, reason, detail} (links, truncated tails...).
    """

    kind: str
    spec: str
    sources: list[str]
    source_stats: np.ndarray            # int64 [F, 2]: size, mtime_ns of each source at build time
    classes: list[str]
    file_id: np.ndarray                 # int32 [N]
    offset: np.ndarray                  # int64 [N] byte offset of the encoded image in its file
    length: np.ndarray                  # int64 [N] byte length of the encoded image
    label: np.ndarray                   # int64 [N]
    key_offsets: np.ndarray             # int64 [N + 1] into key_blob
    key_blob: bytes                     # UTF-8 keys, concatenated
    checksum: np.ndarray | None = None  # uint32 [N] CRC-32 of the encoded bytes, when built with checksums
    skipped: list[dict] = field(default_factory=list)
    extra_stats: dict = field(default_factory=dict)  # directory mtimes (ImageFolder staleness)
    labels_checked: bool = True         # built with the label cap and gap rule (False: an older vitdata's index)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def key(self, i: int) -> str:
        return self.key_blob[self.key_offsets[i]:self.key_offsets[i + 1]].decode("utf-8", "surrogateescape")

    def path(self, i: int) -> str:
        return self.sources[int(self.file_id[i])]

    def describe(self, i: int) -> str:
        """Where sample i lives, for messages: the file, or the shard and the member's byte offset."""
        if self.kind == "imagefolder":
            return self.path(i)
        return f"{self.path(i)}@{int(self.offset[i])} ({self.key(i)})"

    @property
    def fingerprint(self) -> str:
        """sha256 over what defines the samples (sources, offsets, lengths, labels, keys, classes)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.kind, self.sources, self.classes]).encode())
        for a in (self.file_id, self.offset, self.length, self.label, self.key_offsets):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(self.key_blob)
        return h.hexdigest()

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        header = {
            "format": "vitdata-index", "format_version": FORMAT_VERSION, "kind": self.kind, "spec": self.spec,
            "sources": self.sources, "classes": self.classes, "skipped": self.skipped,
            "extra_stats": self.extra_stats, "created": time.time(), "fingerprint": self.fingerprint,
            "labels_checked": self.labels_checked,
        }
        arrays = {
            "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
            "source_stats": self.source_stats, "file_id": self.file_id, "offset": self.offset,
            "length": self.length, "label": self.label, "key_offsets": self.key_offsets,
            "key_blob": np.frombuffer(self.key_blob, np.uint8),
        }
        if self.checksum is not None:
            arrays["checksum"] = self.checksum
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str) -> "SampleIndex":
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                if header.get("format") != "vitdata-index":
                    raise StateError(f"{path}: not a vitdata index")
                if header.get("format_version", 0) > FORMAT_VERSION:
                    raise StateError(f"{path}: written by a newer vitdata (format {header['format_version']})")
                idx = cls(kind=header["kind"], spec=header["spec"], sources=header["sources"],
                          source_stats=z["source_stats"], classes=header["classes"], file_id=z["file_id"],
                          offset=z["offset"], length=z["length"], label=z["label"],
                          key_offsets=z["key_offsets"], key_blob=z["key_blob"].tobytes(),
                          checksum=z["checksum"] if "checksum" in z.files else None,
                          skipped=header.get("skipped", []), extra_stats=header.get("extra_stats", {}),
                          labels_checked=bool(header.get("labels_checked", False)))
        except StateError:
            raise
        # zipfile raises NotImplementedError for a damaged compression-method field and RuntimeError for a
        # damaged flags field that marks a member encrypted.
        except (OSError, ValueError, KeyError, TypeError, EOFError, json.JSONDecodeError, zlib.error,
                zipfile.BadZipFile, UnicodeDecodeError, NotImplementedError, RuntimeError) as e:
            raise StateError(f"{path}: unreadable or damaged index ({type(e).__name__}: {e})") from e
        if idx.fingerprint != header.get("fingerprint"):
            raise StateError(f"{path}: index content does not match its recorded fingerprint")
        return idx

    def stale_reason(self) -> str | None:
        """Why the sources no longer match this index (a changed, added or removed file), or None."""
        for p, (size, mtime) in zip(self.sources, self.source_stats.tolist()):
            try:
                st = os.stat(p)
            except OSError:
                return f"{p} is gone"
            if st.st_size != size or st.st_mtime_ns != mtime:
                return f"{p} changed (size or mtime)"
        for p, mtime in self.extra_stats.items():
            try:
                if os.stat(p).st_mtime_ns != mtime:
                    return f"{p} changed (a file was added, removed or renamed)"
            except OSError:
                return f"{p} is gone"
        return None


# ----------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------

class _Builder:
    def __init__(self):
        self.file_id, self.offset, self.length, self.label, self.keys = [], [], [], [], []

    def add(self, fid: int, off: int, n: int, y: int, key: str) -> None:
        self.file_id.append(fid)
        self.offset.append(off)
        self.length.append(n)
        self.label.append(y)
        self.keys.append(key)

    def finish(self, **kw) -> SampleIndex:
        encoded = [k.encode("utf-8", "surrogateescape") for k in self.keys]
        key_offsets = np.zeros(len(encoded) + 1, np.int64)
        if encoded:
            np.cumsum([len(k) for k in encoded], out=key_offsets[1:])
        return SampleIndex(file_id=np.asarray(self.file_id, np.int32), offset=np.asarray(self.offset, np.int64),
                           length=np.asarray(self.length, np.int64), label=np.asarray(self.label, np.int64),
                           key_offsets=key_offsets, key_blob=b"".join(encoded), **kw)


def _ext_of(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _build_imagefolder(root: str) -> SampleIndex:
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise DataError("empty_dataset", root, detail="no class directories (expected ROOT/<class>/<image>)")
    b, sources, stats, dir_mtimes = _Builder(), [], [], {root: os.stat(root).st_mtime_ns}
    for y, cls in enumerate(classes):
        cdir = os.path.join(root, cls)
        for dirpath, dirnames, filenames in os.walk(cdir, followlinks=True):
            dirnames.sort()
            dir_mtimes[dirpath] = os.stat(dirpath).st_mtime_ns
            # a directory named like an image counts as a bad entry, not a folder to walk
            for d in [d for d in dirnames if _ext_of(d) in IMAGE_EXTS]:
                raise DataError("unreadable", os.path.join(dirpath, d), detail="a directory where an image file is expected")
            for name in sorted(filenames):
                if _ext_of(name) not in IMAGE_EXTS:
                    continue
                p = os.path.join(dirpath, name)
                try:
                    st = os.stat(p)
                except OSError as e:
                    raise DataError("unreadable", p, detail=f"cannot stat ({e.strerror})") from e
                if not stat.S_ISREG(st.st_mode):
                    raise DataError("unreadable", p, detail="not a regular file")
                if not os.access(p, os.R_OK):
                    raise DataError("unreadable", p, detail="permission denied")
                b.add(len(sources), 0, st.st_size, y, os.path.relpath(p, root))
                sources.append(p)
                stats.append((st.st_size, st.st_mtime_ns))
    if not sources:
        raise DataError("empty_dataset", root, detail="no .jpg/.jpeg/.png files under the class directories")
    return b.finish(kind="imagefolder", spec=root, sources=sources, source_stats=np.asarray(stats, np.int64),
                    classes=classes, extra_stats=dir_mtimes)


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


def _scan_shard(fid: int, path: str, size: int, b: _Builder, seen: dict, skipped: list,
                member_cap: int, mark_bad_labels: bool = False) -> None:
    """Add the samples of one shard to ``b``. Structural damage (truncation, bad header) keeps the
    samples before it and records the rest in ``skipped``; semantic errors raise DataError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pos, long_name, pax_name = 0, None, None
        group_key, group, group_off = None, {}, 0

        def close_group():
            if group_key is None or "_dropped" in group:
                return
            img = [e for e in IMAGE_EXTS if e in group]
            if "cls" not in group and not img:
                return
            if "cls" not in group:
                raise DataError("missing_label", path, offset=group[img[0]][0] - _BLOCK,
                                detail=f"sample {group_key!r} has an image but no .cls member")
            if not img:
                raise DataError("missing_image", path, offset=group["cls"][0] - _BLOCK,
                                detail=f"sample {group_key!r} has a .cls but no .jpg/.jpeg/.png member")
            if group_key in seen:
                raise DataError("duplicate_key", path, offset=group_off,
                                detail=f"key {group_key!r} already seen in {seen[group_key]}")
            cls_off, cls_len = group["cls"]
            raw = os.pread(fd, cls_len, cls_off) if cls_len <= 64 else b"<too long>"
            text = raw.strip()
            label, why = BAD_LABEL, f".cls holds {raw[:20]!r}, expected ASCII digits"
            if text.isdigit():
                # at most 64 digits here; a label past MAX_LABEL would make a class list of that length
                label = int(text)
                if label > MAX_LABEL:
                    label, why = BAD_LABEL, (f".cls holds {_short_number(text)}, above the largest label vitdata "
                                             f"accepts ({MAX_LABEL})")
            if label == BAD_LABEL:
                if not mark_bad_labels:
                    raise DataError("bad_label", path, offset=cls_off - _BLOCK, detail=f"sample {group_key!r}: {why}")
                skipped.append({"path": path, "offset": cls_off - _BLOCK, "reason": "bad_label",
                                "detail": f"sample {group_key!r}: {why}; indexed with label -1"})
            seen[group_key] = f"{path}@{group_off}"
            off, n = group[img[0]]
            b.add(fid, off, n, label, group_key)

        while True:
            hdr = os.pread(fd, _BLOCK, pos)
            if len(hdr) < _BLOCK:
                if hdr.strip(b"\0") or pos < size:
                    skipped.append({"path": path, "offset": pos, "reason": "truncated",
                                    "detail": "shard ends inside a header"})
                break
            if hdr == b"\0" * _BLOCK:
                break
            if not _header_ok(hdr):
                skipped.append({"path": path, "offset": pos, "reason": "bad_header",
                                "detail": "header checksum mismatch; rest of the shard not read"})
                break
            n = _parse_octal(hdr[124:136], path, pos)
            typeflag = hdr[156:157]
            data_off = pos + _BLOCK
            if data_off + n > size:
                skipped.append({"path": path, "offset": pos, "reason": "truncated",
                                "detail": f"member claims {n} bytes, only {size - data_off} remain"})
                break
            next_pos = data_off + (n + _BLOCK - 1) // _BLOCK * _BLOCK
            if typeflag == b"L":
                long_name = os.pread(fd, min(n, 65536), data_off).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif typeflag == b"x":
                pax_name = _pax_path(os.pread(fd, min(n, 1 << 20), data_off)) or pax_name
            elif typeflag in (b"g", b"5", b"K"):
                pass
            else:
                name = pax_name or long_name
                if name is None:
                    raw = hdr[0:100].split(b"\0", 1)[0]
                    prefix = hdr[345:500].split(b"\0", 1)[0] if hdr[257:262] == b"ustar" else b""
                    name = ((prefix + b"/" + raw) if prefix else raw).decode("utf-8", "surrogateescape")
                long_name = pax_name = None
                dirname, _, base = name.rpartition("/")
                stem, dot, ext = base.partition(".")
                key, changed = _safe_key((dirname + "/" if dirname else "") + stem)
                ext = ext.lower()
                regular = typeflag in _REGULAR
                if changed and regular:
                    skipped.append({"path": path, "offset": pos, "reason": "bad_key",
                                    "detail": f"member name {name!r} normalised to key {key!r}"})
                if not regular:  # a link, device or FIFO is never read or followed
                    kind = _NON_REGULAR.get(typeflag, f"type {typeflag!r}")
                    sample = ext in IMAGE_EXTS + ("cls",) and dot
                    skipped.append({"path": path, "offset": pos, "reason": "non_regular_member",
                                    "detail": f"{name!r} is a {kind}" + (f"; sample {key!r} passed over" if sample else "")})
                if ext in IMAGE_EXTS + ("cls",) and dot:
                    if key != group_key:
                        close_group()
                        group_key, group, group_off = key, {}, pos
                    if not regular:  # the sample is passed over, like one with an oversized member
                        group["_dropped"] = (0, 0)
                    elif n > member_cap:  # refused before any allocation; the whole sample is passed over
                        skipped.append({"path": path, "offset": pos, "reason": "member_too_large",
                                        "detail": f"{name!r} claims {n} bytes (cap {member_cap})"})
                        group["_dropped"] = (0, 0)
                    elif ext in group or (ext in IMAGE_EXTS and any(e in group for e in IMAGE_EXTS)):
                        raise DataError("duplicate_key", path, offset=pos,
                                        detail=f"second {ext!r} member for key {key!r}")
                    else:
                        group[ext] = (data_off, n)
            pos = next_pos
        close_group()
    finally:
        os.close(fd)


def _find_shards(source: str) -> list[str]:
    if any(c in source for c in "{}"):
        paths = _expand_braces(source)
    elif os.path.isdir(source):
        paths = sorted(os.path.join(source, n) for n in os.listdir(source) if n.endswith(".tar"))
    else:
        paths = [source]
    for p in paths:
        if not os.path.exists(p):
            raise DataError("not_found", p, detail="shard does not exist")
        if not os.path.isfile(p):
            raise DataError("unreadable", p, detail="not a regular file")
    return [os.path.abspath(p) for p in paths]


def _build_wds(source: str, num_classes: int | None, member_cap: int, mark_bad_labels: bool = False) -> SampleIndex:
    shards = _find_shards(source)
    if not shards:
        raise DataError("empty_dataset", source, detail="no .tar shards found")
    b, seen, skipped, stats = _Builder(), {}, [], []
    for fid, p in enumerate(shards):
        try:
            st = os.stat(p)
            _scan_shard(fid, p, st.st_size, b, seen, skipped, member_cap, mark_bad_labels)
        except PermissionError as e:
            raise DataError("unreadable", p, detail=str(e.strerror)) from e
        stats.append((st.st_size, st.st_mtime_ns))
    if not b.label:
        raise DataError("empty_dataset", source, detail="the shards hold no KEY.(jpg|jpeg|png) + KEY.cls samples")
    classes_file = os.path.join(os.path.dirname(shards[0]), "classes.json")
    extra = {}
    if os.path.isfile(classes_file):
        classes = _read_classes(classes_file)
        extra[classes_file] = os.stat(classes_file).st_mtime_ns
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
    return b.finish(kind="wds", spec=source, sources=shards, source_stats=np.asarray(stats, np.int64),
                    classes=classes, skipped=skipped, extra_stats=extra)


def _short_number(text: bytes) -> str:
    """ASCII digits for a message: a long number as its first digits and its length."""
    return text.decode() if len(text) <= 20 else f"{text[:12].decode()}... ({len(text)} digits)"


def _labels_beyond_a_gap(labels: np.ndarray) -> tuple[int, int] | None:
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


def _refuse_labels_beyond_a_gap(b: _Builder, shards: list[str], skipped: list, mark: bool, classes_file: str) -> None:
    """Apply :func:`_labels_beyond_a_gap` to the scanned samples: raise ``bad_label``, or with ``mark`` index
    the refused samples with label -1 (listed in ``skipped``). A gap below every label always raises."""
    labels = np.asarray(b.label, np.int64)
    gap = _labels_beyond_a_gap(labels)
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


def _read_classes(path: str) -> list[str]:
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


def _is_wds(source: str) -> bool:
    if "{" in source or source.endswith(".tar"):
        return True
    return os.path.isdir(source) and any(n.endswith(".tar") for n in os.listdir(source))


def build_index(source: str, *, checksums: bool = False, num_classes: int | None = None,
                member_cap: int = MEMBER_CAP, bad_labels: str = "raise") -> SampleIndex:
    """Scan ``source`` (ImageFolder root, directory of .tar shards, brace pattern or one .tar).

    Raises DataError naming the file for: a path that does not exist, an unreadable file, an empty
    dataset, a sample without a label (or label without an image), a duplicate key, a label outside
    the class range. ``checksums=True`` also reads every payload once to store its CRC-32.
    ``bad_labels="mark"`` indexes a tar sample whose label is not digits or is outside the class range
    with label -1 (listed in ``skipped``) instead of refusing the dataset: the loader then skips or
    raises for that one sample (reason ``bad_label``) by its ``on_error``. A label above ``MAX_LABEL``
    is always such a bad label; without classes.json and ``num_classes``, so is a label beyond a gap in
    the labels seen (:func:`_labels_beyond_a_gap`), whose message names classes.json as the fix.
    """
    if bad_labels not in ("raise", "mark"):
        raise ValueError(f"bad_labels must be 'raise' or 'mark', got {bad_labels!r}")
    source = os.path.abspath(os.path.expanduser(source)) if "{" not in source else source
    if "{" not in source and not os.path.exists(source):
        raise DataError("not_found", source, detail="no such file or directory")
    if _is_wds(source):
        idx = _build_wds(source, num_classes, member_cap, bad_labels == "mark")
    else:
        idx = _build_imagefolder(source)
        if num_classes is not None and num_classes != idx.num_classes:
            raise DataError("bad_label", source, detail=f"{idx.num_classes} class directories, {num_classes} expected")
    if checksums:
        reader = SampleReader(idx)
        idx.checksum = np.fromiter((zlib.crc32(reader.read(i)) for i in range(len(idx))), np.uint32, len(idx))
        reader.close()
    return idx


def cache_dir() -> str:
    return os.environ.get("VITDATA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "vitdata"))


def default_index_path(source: str) -> str:
    spec = os.path.abspath(source) if "{" not in source else source
    return os.path.join(cache_dir(), "index", hashlib.sha256(spec.encode()).hexdigest()[:24] + ".npz")


def open_index(source: str, *, path: str | None = None, rebuild: bool = False, checksums: bool = False,
               num_classes: int | None = None, verbose: bool = True, bad_labels: str = "raise") -> SampleIndex:
    """Load the cached index of ``source`` or build it (and cache it atomically). A cached index whose
    sources changed since (size or mtime of a file, or a directory's entries) is rebuilt, with a message."""
    path = path or default_index_path(source)
    if not rebuild and os.path.exists(path):
        try:
            idx = SampleIndex.load(path)
            why = idx.stale_reason()
            if why is None and idx.kind == "wds" and not idx.labels_checked:
                why = "built by an older vitdata, before labels were checked against a cap and for gaps"
            if why is None and (not checksums or idx.checksum is not None):
                return idx
            why = why or "checksums requested"
        except StateError as e:
            why = str(e)
        if verbose:
            print(f"vitdata: rebuilding the index of {source}: {why}", file=sys.stderr)
    idx = build_index(source, checksums=checksums, num_classes=num_classes, bad_labels=bad_labels)
    if verbose and idx.skipped:
        reasons = {}
        for s in idx.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        print(f"vitdata: index of {source}: passed over " +
              ", ".join(f"{v} {k}" for k, v in sorted(reasons.items())), file=sys.stderr)
    try:
        idx.save(path)
    except OSError as e:  # a read-only cache must not stop training; say so
        if verbose:
            print(f"vitdata: could not cache the index: {e}", file=sys.stderr)
    return idx


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------

class SampleReader:
    """Encoded bytes of sample ``i``, read with ``os.pread`` at the indexed offset.

    Shard descriptors are opened once per process and shared by threads (``pread`` does not move a
    file position); ImageFolder files are opened per read. A pickled or forked reader reopens its own.
    With ``verify=True`` and checksums in the index, a CRC-32 mismatch raises ``checksum_mismatch``.
    """

    def __init__(self, index: SampleIndex, *, verify: bool = False):
        self.index = index
        self.verify = verify and index.checksum is not None
        self._per_file = index.kind == "imagefolder"
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fds"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _open(self, path: str, i: int) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise DataError("missing", path, sample_id=i, detail="file not found") from None
        except OSError as e:
            raise DataError("missing", path, sample_id=i, detail=f"cannot open ({e.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            kind = "FIFO" if stat.S_ISFIFO(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode) else "special file"
            reason = "read_timeout" if stat.S_ISFIFO(st.st_mode) else "missing"
            raise DataError(reason, path, sample_id=i, detail=f"not a regular file ({kind}); reading it would block or fail")
        return fd

    def _shard_fd(self, fid: int, i: int) -> int:
        if self._pid != os.getpid():  # forked: descriptors are shared with the parent's offsets; reopen
            self._fds, self._pid, self._lock = {}, os.getpid(), threading.Lock()
        fd = self._fds.get(fid)
        if fd is None:
            with self._lock:
                fd = self._fds.get(fid)
                if fd is None:
                    fd = self._fds[fid] = self._open(self.index.sources[fid], i)
        return fd

    def read(self, i: int) -> bytes:
        idx = self.index
        fid, off, n = int(idx.file_id[i]), int(idx.offset[i]), int(idx.length[i])
        if self._per_file:
            path = idx.sources[fid]
            fd = self._open(path, i)
            try:
                size = os.fstat(fd).st_size
                if size != n:
                    raise DataError("size_changed", path, sample_id=i, detail=f"{size} bytes now, {n} when indexed")
                data = os.pread(fd, n, 0)
            finally:
                os.close(fd)
        else:
            data = os.pread(self._shard_fd(fid, i), n, off)
        if len(data) != n:
            raise DataError("truncated", idx.sources[fid], sample_id=i, offset=off,
                            detail=f"read {len(data)} of {n} bytes")
        if self.verify and zlib.crc32(data) != int(idx.checksum[i]):
            raise DataError("checksum_mismatch", idx.sources[fid], sample_id=i, offset=None if self._per_file else off,
                            detail="bytes differ from those indexed")
        return data

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = {}

    def __del__(self):
        if getattr(self, "_pid", None) == os.getpid():
            self.close()


# ----------------------------------------------------------------------------------------------------------
# `vitdata index`
# ----------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None, prog: str = "vitdata index") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Scan an ImageFolder tree or WebDataset tar shards into a sample index (cached, pickle-free).",
        epilog="PATH: an ImageFolder root (ROOT/<class>/<image>), a directory of .tar shards, a brace pattern "
               "such as 'train-{000000..000004}.tar' (quote it), or one .tar file.")
    parser.add_argument("path", help="dataset location")
    parser.add_argument("--out", help="where to write the index (.npz); default: the vitdata cache")
    parser.add_argument("--checksums", action="store_true", help="also store a CRC-32 of every sample (reads all bytes)")
    parser.add_argument("--num-classes", type=int, help="expected number of classes (labels are checked against it)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if a fresh cached index exists")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        idx = open_index(args.path, path=args.out, rebuild=args.rebuild, checksums=args.checksums,
                         num_classes=args.num_classes)
    except DataError as e:
        print(f"vitdata index: {e}", file=sys.stderr)
        return 2
    counts = np.bincount(idx.label, minlength=idx.num_classes)
    summary = {"path": args.path, "kind": idx.kind, "samples": len(idx), "classes": idx.num_classes,
               "files": len(idx.sources), "min_per_class": int(counts.min()), "max_per_class": int(counts.max()),
               "skipped": len(idx.skipped), "index": args.out or default_index_path(args.path),
               "fingerprint": idx.fingerprint[:16], "seconds": round(time.perf_counter() - t0, 3)}
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>14}: {v}")
    return 0
