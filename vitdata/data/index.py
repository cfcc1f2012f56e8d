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
(no pickles) holding the arrays and a JSON header (format version, the source as given, the label member,
source paths with sizes, mtimes and ctimes, a content probe of each shard), written atomically.

An index proves it belongs to the data it is used for before it is used (:meth:`SampleIndex.mismatch`,
:meth:`SampleIndex.stale_reason`); otherwise ``open_index`` rebuilds it with a message naming the cause:

* it was built for this source (the path as given, made absolute), label member and class list: a cached
  index copied from another dataset, or found under another path, is not used;
* every source file and folder has the size, mtime and *ctime* it had: a file replaced or rewritten with its
  size and mtime kept (``cp -p``, ``touch -r``) has a new ctime, which no user can set back; a folder whose
  entries changed (a file added, removed or renamed) has a new mtime and ctime;
* each tar shard's content probe (:func:`vitdata.data.shards.probe`: its first block and the members around
  its first and last samples, a few preads) matches, also on filesystems that do not keep ctimes.

The whole check costs 0.39 ms at open on the CIFAR-10 shards (5 shards, 50,000 samples; 13 ms to load the
index, 3.3 s to build it; 2 cores under load).

``SampleReader`` returns the bytes of sample ``i`` with ``os.pread``: thread-safe, and safe across
processes (each process opens its own descriptors; a pickled reader carries none).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from vitdata.errors import DataError, StateError
from vitdata.data import folders, shards
from vitdata.io import atomic_write, cache_dir
from vitdata.data.folders import SPLIT_NAMES  # noqa: F401  (re-exported: where a split name is looked up)
from vitdata.data.shards import MEMBER_CAP, is_wds

# 2: ctimes beside sizes and mtimes, folder stats as [mtime, ctime], shard probes, the label member.
FORMAT_VERSION = 2


# ----------------------------------------------------------------------------------------------------------
# The index
# ----------------------------------------------------------------------------------------------------------

@dataclass
class SampleIndex:
    """Arrays of length N (one row a sample) plus the source description.

    kind: "imagefolder" or "wds". spec: the source as given, resolved to absolute paths.
    sources: file paths by file id (ImageFolder: one per sample; wds: one per shard).
    classes: class names (ImageFolder: directory names, classes.json or the training split's list; wds: from
    classes.json beside the shards, the training split's list, or "0".."C-1").
    skipped: what the scan passed over, as dicts {path, offset, reason, detail} (links, truncated tails...).
    """

    kind: str
    spec: str
    sources: list[str]
    source_stats: np.ndarray            # int64 [F, 3]: size, mtime_ns, ctime_ns of each source at build time
                                        # (ctime -1: an index of format 1, which did not keep it)
    classes: list[str]
    file_id: np.ndarray                 # int32 [N]
    offset: np.ndarray                  # int64 [N] byte offset of the encoded image in its file
    length: np.ndarray                  # int64 [N] byte length of the encoded image
    label: np.ndarray                   # int64 [N]
    key_offsets: np.ndarray             # int64 [N + 1] into key_blob
    key_blob: bytes                     # UTF-8 keys, concatenated
    checksum: np.ndarray | None = None  # uint32 [N] CRC-32 of the encoded bytes, when built with checksums
    skipped: list[dict] = field(default_factory=list)
    extra_stats: dict = field(default_factory=dict)  # folders and side files: [mtime_ns, ctime_ns] (staleness)
    labels_checked: bool = True         # built with the label cap and gap rule (False: an older vitdata's index)
    label_member: str = "cls"           # wds: the member the labels were read from
    probes: list = field(default_factory=list)   # wds: shards.probe() of each shard at build time
    index_path: str | None = field(default=None, compare=False, repr=False)  # the file it was loaded from or saved to

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

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over what defines the samples (sources, offsets, lengths, labels, keys, classes).

        Computed once per index object (about 0.9 s at 1.28 M files, and every loader ``state_dict()`` asks
        for it): an index is not changed after it is built or loaded."""
        return self._compute_fingerprint()

    def _compute_fingerprint(self) -> str:
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
            "labels_checked": self.labels_checked, "label_member": self.label_member, "probes": self.probes,
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
        self.index_path = path

    @classmethod
    def load(cls, path: str) -> "SampleIndex":
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                if header.get("format") != "vitdata-index":
                    raise StateError(f"{path}: not a vitdata index")
                if header.get("format_version", 0) > FORMAT_VERSION:
                    raise StateError(f"{path}: written by a newer vitdata (format {header['format_version']})")
                stats = z["source_stats"]
                if stats.ndim == 2 and stats.shape[1] == 2:   # format 1: no ctimes
                    stats = np.concatenate([stats, np.full((stats.shape[0], 1), -1, np.int64)], axis=1)
                idx = cls(kind=header["kind"], spec=header["spec"], sources=header["sources"],
                          source_stats=stats, classes=header["classes"], file_id=z["file_id"],
                          offset=z["offset"], length=z["length"], label=z["label"],
                          key_offsets=z["key_offsets"], key_blob=z["key_blob"].tobytes(),
                          checksum=z["checksum"] if "checksum" in z.files else None,
                          skipped=header.get("skipped", []), extra_stats=header.get("extra_stats", {}),
                          labels_checked=bool(header.get("labels_checked", False)),
                          label_member=str(header.get("label_member", "cls")), probes=list(header.get("probes", [])),
                          index_path=path)
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

    def mismatch(self, source: str, label: str = "cls", classes: list[str] | None = None) -> str | None:
        """Why this index is not the index of ``source`` read with ``label`` and ``classes``, or None."""
        if self.spec != source_spec(source):
            return f"the cached index was built for {self.spec}, not {source_spec(source)}"
        if self.kind == "wds" and self.label_member != label:
            return f"the cached index read labels from .{self.label_member} members, not {label}"
        if classes is not None and list(self.classes) != list(classes):
            return "the cached index has another class list than the one asked for (the training split's)"
        return None

    def stale_reason(self) -> str | None:
        """Why the sources no longer match this index, or None: a file gone, or of another size, mtime or ctime
        (replaced or rewritten, even with its size and mtime kept); a folder whose entries changed; a shard
        whose content probe differs; an index of format 1, which kept neither ctimes nor probes."""
        for p, (size, mtime, ctime) in zip(self.sources, self.source_stats.tolist()):
            try:
                st = os.stat(p)
            except OSError:
                return f"{p} is gone"
            if st.st_size != size or st.st_mtime_ns != mtime:
                return f"{p} changed (size or mtime)"
            if ctime < 0:
                return "built by an older vitdata, which kept no ctimes or content probes"
            if st.st_ctime_ns != ctime:
                return f"{p} changed since it was indexed (its ctime: replaced or rewritten with its size and mtime kept, or its permissions changed)"
        for p, was in self.extra_stats.items():
            try:
                st = os.stat(p)
            except OSError:
                return f"{p} is gone"
            if not isinstance(was, list) or [st.st_mtime_ns, st.st_ctime_ns] != was:
                return f"{p} changed (an entry was added, removed or renamed, or it was replaced)"
        if self.kind == "wds":
            if len(self.probes) != len(self.sources):
                return "built by an older vitdata, which kept no content probes"
            for p, spans, want in zip(self.sources, self._probe_spans(), self.probes):
                try:
                    if shards.probe(p, spans) != want:
                        return f"{p} has other content than when it was indexed (same size and mtime)"
                except OSError as e:
                    return f"{p} cannot be read ({e.strerror})"
        return None

    def _probe_spans(self) -> list[list[tuple[int, int]]]:
        """(offset, length) of the first and last sample of each shard: where :func:`shards.probe` looks."""
        out = [[] for _ in self.sources]
        if len(self):
            fids, first = np.unique(self.file_id, return_index=True)
            _, rlast = np.unique(self.file_id[::-1], return_index=True)
            last = len(self) - 1 - rlast
            for f, a, z in zip(fids.tolist(), first.tolist(), last.tolist()):
                out[f] = [(int(self.offset[i]), int(self.length[i])) for i in dict.fromkeys((a, z))]
        return out


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


def _build_wds(source: str, num_classes: int | None, member_cap: int, mark_bad_labels: bool = False,
               label: str = "cls", classes: list[str] | None = None) -> SampleIndex:
    b = _Builder()
    idx = b.finish(kind="wds", spec=source, label_member=label,
                   **shards.scan(source, b, num_classes, member_cap, mark_bad_labels, label, classes))
    idx.probes = [shards.probe(p, spans) for p, spans in zip(idx.sources, idx._probe_spans())]
    return idx


def source_spec(source: str) -> str:
    """``source`` as an index records it: a path made absolute (``~`` expanded), a brace pattern as given."""
    return source if "{" in source else os.path.abspath(os.path.expanduser(source))


def build_index(source: str, *, checksums: bool = False, num_classes: int | None = None,
                member_cap: int = MEMBER_CAP, bad_labels: str = "raise", label: str = "cls",
                classes: list[str] | None = None) -> SampleIndex:
    """Scan ``source`` (ImageFolder root, directory of .tar shards, brace pattern or one .tar).

    Raises DataError naming the file for: a path that does not exist, an unreadable file, an empty
    dataset, a sample without a label (or label without an image), a duplicate key, a label outside
    the class range. ``checksums=True`` also reads every payload once to store its CRC-32.
    ``bad_labels="mark"`` indexes a tar sample whose label is not digits or is outside the class range
    with label -1 (listed in ``skipped``) instead of refusing the dataset: the loader then skips or
    raises for that one sample (reason ``bad_label``) by its ``on_error``. A label above ``MAX_LABEL``
    is always such a bad label; without classes.json and ``num_classes``, so is a label beyond a gap in
    the labels seen (:func:`vitdata.data.shards.labels_beyond_a_gap`), whose message names classes.json as the fix.
    ``label``: the tar member holding the label, ``"cls"`` | ``"class"`` | ``"label"`` | ``"txt"`` (an integer)
    | ``"json:FIELD"`` (same bad-label rules). Gzip shards (``.tar.gz``, ``.tgz``) are inflated once into
    the cache (:mod:`vitdata.data.gzshards`).
    ``classes``: the dataset's class list when this is one split of it and another split (training) gave the
    list: labels follow it (:func:`vitdata.data.folders.class_list`; for shards, a label outside it is a bad label).
    ImageFolder symbolic links: :mod:`vitdata.data.folders` (each real file once, never into a loop or out of
    its class folder; what is passed over is counted in ``skipped``).
    """
    if bad_labels not in ("raise", "mark"):
        raise ValueError(f"bad_labels must be 'raise' or 'mark', got {bad_labels!r}")
    source = source_spec(source)
    if classes is not None:
        classes = [str(c) for c in classes]
    if "{" not in source and not os.path.exists(source):
        raise DataError("not_found", source, detail="no such file or directory")
    if is_wds(source):
        idx = _build_wds(source, num_classes, member_cap, bad_labels == "mark", label, classes)
    elif os.path.exists(source) and not os.path.isdir(source):
        raise DataError("unreadable", source, detail="a file, not a dataset: give an ImageFolder directory "
                        "(ROOT/<class>/<image>), a directory of .tar shards, a brace pattern or one .tar shard")
    else:
        b = _Builder()
        idx = b.finish(kind="imagefolder", spec=source, **folders.scan(source, b, classes))
        if num_classes is not None and num_classes != idx.num_classes:
            raise DataError("bad_label", source, detail=f"{idx.num_classes} class directories, {num_classes} expected")
    if checksums:
        from vitdata.data.reader import SampleReader

        reader = SampleReader(idx)
        idx.checksum = np.fromiter((zlib.crc32(reader.read(i)) for i in range(len(idx))), np.uint32, len(idx))
        reader.close()
    return idx


def default_index_path(source: str, label: str = "cls", classes: list[str] | None = None) -> str:
    """Where the cache keeps the index of ``source`` (read with ``label``, labelled by ``classes``)."""
    spec = source_spec(source)
    if label != "cls":
        spec += f"\0label={label}"
    if classes is not None:
        spec += "\0classes=" + hashlib.sha256(json.dumps([str(c) for c in classes]).encode()).hexdigest()
    return os.path.join(cache_dir(), "index", hashlib.sha256(spec.encode()).hexdigest()[:24] + ".npz")


def open_index(source: str, *, path: str | None = None, rebuild: bool = False, checksums: bool = False,
               num_classes: int | None = None, verbose: bool = True, bad_labels: str = "raise",
               label: str = "cls", classes: list[str] | None = None) -> SampleIndex:
    """Load the cached index of ``source`` or build it (and cache it atomically). A cached index that does not
    prove it belongs to ``source`` (:meth:`SampleIndex.mismatch`: another source, label member or class
    list) or whose sources changed since (:meth:`SampleIndex.stale_reason`) is rebuilt, with a message.
    ``classes``: the dataset's class list, for a split other than the one that defines it (see
    :func:`class_list`)."""
    path = path or default_index_path(source, label, classes)
    if not rebuild and os.path.exists(path):
        try:
            idx = SampleIndex.load(path)
            why = idx.mismatch(source, label, classes) or idx.stale_reason()
            if why is None and idx.kind == "wds" and not idx.labels_checked:
                why = "built by an older vitdata, before labels were checked against a cap and for gaps"
            if why is None and (not checksums or idx.checksum is not None):
                return idx
            why = why or "checksums requested"
        except StateError as e:
            why = str(e)
        if verbose:
            print(f"vitdata: rebuilding the index of {source}: {why}", file=sys.stderr)
    idx = build_index(source, checksums=checksums, num_classes=num_classes, bad_labels=bad_labels, label=label,
                      classes=classes)
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


def split_classes(split: str, train: str | None, label: str = "cls") -> list[str] | None:
    """The class list that labels ``split`` when ``train`` is the training split of its dataset: ``train``'s
    (:func:`class_list`), or None when ``split`` is that training split (or there is none)."""
    if not train or not split or source_spec(split) == source_spec(train):
        return None
    try:
        return class_list(train, label)
    except DataError as e:
        raise DataError(e.reason, e.path, offset=e.offset, detail=f"{e.detail} (the class list of the training "
                        f"split, which labels {split})") from e


def class_list(source: str, label: str = "cls") -> list[str]:
    """The class list of the dataset whose training split is ``source``: what every other split of it is
    labelled by (``open_index(split, classes=class_list(train))``). ImageFolder: ``classes.json`` in the root,
    else the class folders (no file is walked); shards: ``classes.json`` beside them, else the index's."""
    spec = source_spec(source)
    if not is_wds(spec) and os.path.isdir(spec):
        return folders.class_list(spec)[0]
    return list(open_index(source, bad_labels="mark", label=label, verbose=False).classes)


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------


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
    # a DataError (bad path, bad data) propagates: the vitdata command prints it as one line, exit status 1
    idx = open_index(args.path, path=args.out, rebuild=args.rebuild, checksums=args.checksums,
                     num_classes=args.num_classes)
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
