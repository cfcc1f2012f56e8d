"""ImageFolder trees: ``ROOT/<class>/.../<image>`` scanned into index rows, symbolic links followed once.

Classes are the folder names sorted as torchvision sorts them, or the list of ``ROOT/classes.json``, or the
list the caller gives (another split's: one class list per dataset, see :func:`class_list`). With a given or
listed class list, a class folder that is not in it is refused (``bad_label``, naming the folder), and a
listed class without a folder simply has no samples: every split of a dataset labels a class alike.

Symbolic links. Entries that are not links are walked first; links after, in the order they were met, so a
file reached both directly and through a link is indexed where it really lives.

* Every real directory is walked once. A directory link whose target was walked already -- a loop such as
  ``c0/self -> .``, or a second route to one folder -- is passed over and counted (``symlink_loop``), as is
  a chain of links that leads back to itself (``a -> b -> a``, file or folder names alike). A broken link
  named like an image is refused (``unreadable``, naming it), as a missing file would be.
* A directory link that leads out of the real tree of the class folder holding it (``c0/up -> ..``, which
  would label every other class's files as c0) is passed over and counted (``symlink_outside``). A class
  folder that is itself a link is that class's tree.
* A file link is followed wherever it leads (a subset made of links into a full dataset is common); a real
  file is one sample, so a second route to a file already indexed (a link, or a hard link) is passed over
  and counted (``duplicate_file``).

Passed-over entries are listed in the index's ``skipped`` with their reason, and counted in the message
``open_index`` prints; nothing is refused for a link, and no file gets the label of a folder it is not in.
"""
from __future__ import annotations

import errno
import os
import stat
from array import array

import numpy as np

from vitdata.errors import DataError

IMAGE_EXTS = ("jpg", "jpeg", "png")
SPLIT_NAMES = ("train", "val", "validation", "test")
CLASSES_FILE = "classes.json"


def _ext_of(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def class_list(root: str, classes: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(classes, class folders found) of the ImageFolder ``root``.

    ``classes``: the dataset's class list (another split's); else ``ROOT/classes.json``; else the folders,
    sorted. DataError ``bad_label`` naming the folder for a folder outside a given or listed class list, and
    naming classes.json when it disagrees with a given list."""
    from vitdata.data.shards import read_classes

    try:
        folders = sorted(e.name for e in os.scandir(root) if e.is_dir())
    except OSError as e:
        raise DataError("unreadable", root, detail=f"cannot list ({e.strerror})") from e
    listed_file = os.path.join(root, CLASSES_FILE)
    listed = read_classes(listed_file) if os.path.isfile(listed_file) else None
    if classes is not None and listed is not None and list(listed) != list(classes):
        raise DataError("bad_label", listed_file, detail=f"lists {len(listed)} classes that differ from the "
                        f"dataset's class list ({len(classes)} classes, from its training split)")
    want = list(classes) if classes is not None else listed
    if want is None:
        return folders, folders
    known = set(want)
    for name in folders:
        if name not in known:
            whose = "the dataset's class list (its training split's)" if classes is not None else listed_file
            raise DataError("bad_label", os.path.join(root, name), detail=f"class folder {name!r} is not in "
                            f"{whose}: its samples would have no label ({len(want)} classes)")
    return want, folders


class _Rows:
    """The scan's files: path, label and stat fields, in compact arrays (1.28 M files fit in ~60 MB)."""

    def __init__(self):
        self.paths: list[str] = []
        self.label = array("q")
        self.size, self.mtime, self.ctime = array("q"), array("q"), array("q")
        self.dev, self.ino = array("Q"), array("Q")

    def add(self, path: str, y: int, st: os.stat_result) -> None:
        self.paths.append(path)
        self.label.append(y)
        self.size.append(st.st_size)
        self.mtime.append(st.st_mtime_ns)
        self.ctime.append(st.st_ctime_ns)
        self.dev.append(st.st_dev)
        self.ino.append(st.st_ino)


def _check_file(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise DataError("unreadable", path, detail="not a regular file")
    if not os.access(path, os.R_OK):
        raise DataError("unreadable", path, detail="permission denied")


class _Walk:
    """One scan's state: rows, directories walked (by device and inode), links met, entries passed over."""

    def __init__(self):
        self.rows = _Rows()
        self.walked: set[tuple[int, int]] = set()
        self.dir_stats: dict[str, list[int]] = {}
        self.links: list[tuple[int, str, str]] = []     # (label, real tree of its class, link path)
        self.skipped: list[dict] = []

    def tree(self, start: str, tree: str, y: int) -> None:
        """Walk ``start`` (in class ``y`` whose real tree is ``tree``) without following links: its files
        become rows, its links are queued. Order: a folder's files, then its subfolders (sorted), as
        ``os.walk`` top-down."""
        stack = [start]
        while stack:
            d = stack.pop()
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in self.walked:
                self.skipped.append({"path": d, "offset": None, "reason": "symlink_loop",
                                     "detail": f"{os.path.realpath(d)} is walked already (a link loop, or a second "
                                               f"route to one folder); passed over"})
                continue
            self.walked.add((st.st_dev, st.st_ino))
            self.dir_stats[d] = [st.st_mtime_ns, st.st_ctime_ns]
            subdirs = []
            for e in sorted(os.scandir(d), key=lambda e: e.name):
                if e.is_symlink():
                    self.links.append((y, tree, e.path))
                elif e.is_dir(follow_symlinks=False):
                    if _ext_of(e.name) in IMAGE_EXTS:   # counts as a bad entry, not a folder to walk
                        raise DataError("unreadable", e.path, detail="a directory where an image file is expected")
                    subdirs.append(e.path)
                elif _ext_of(e.name) in IMAGE_EXTS:
                    fst = e.stat(follow_symlinks=False)
                    _check_file(e.path, fst)
                    self.rows.add(e.path, y, fst)
            stack.extend(reversed(subdirs))

    def follow_links(self) -> None:
        """Follow the queued links (and those met on the way) by the rules of the module docstring."""
        i = 0
        while i < len(self.links):
            y, tree, p = self.links[i]
            i += 1
            image = _ext_of(os.path.basename(p)) in IMAGE_EXTS
            try:
                st = os.stat(p)
            except OSError as e:
                if e.errno == errno.ELOOP:   # links that lead back to one another (a -> b -> a)
                    self.skipped.append({"path": p, "offset": None, "reason": "symlink_loop",
                                         "detail": "a chain of links that never reaches a file or folder; passed over"})
                    continue
                if image:
                    raise DataError("unreadable", p, detail=f"cannot stat ({e.strerror}; a broken link?)") from e
                continue
            if stat.S_ISDIR(st.st_mode):
                if image:
                    raise DataError("unreadable", p, detail="a directory where an image file is expected")
                real = os.path.realpath(p)
                if not (real == tree or real.startswith(tree + os.sep)):
                    self.skipped.append({"path": p, "offset": None, "reason": "symlink_outside",
                                         "detail": f"links to {real}, outside its class folder {tree}; passed over "
                                                   f"(its files would take this class's label)"})
                    continue
                self.tree(p, tree, y)
            elif image:
                _check_file(p, st)
                self.rows.add(p, y, st)


def scan(root: str, b, classes: list[str] | None = None) -> dict:
    """Scan the ImageFolder ``root`` into the index builder ``b`` (its ``add``) and return the index fields of
    the layout: ``sources``, ``source_stats`` (size, mtime_ns, ctime_ns), ``classes``, ``skipped``,
    ``extra_stats`` (each folder walked: [mtime_ns, ctime_ns], so an added, removed or renamed entry shows).
    ``classes``: the dataset's class list (see :func:`class_list`)."""
    classes, folders = class_list(root, classes)
    if not folders:
        flat = sum(1 for e in os.scandir(root) if e.is_file() and _ext_of(e.name) in IMAGE_EXTS)
        hint = (f"; it holds {flat} image files directly: a flat split (ImageNet's val as distributed) needs "
                f"them moved into ROOT/<class>/ first (valprep.sh of github.com/soumith/imagenetloader.torch, "
                f"run in the folder, does that)") if flat else ""
        raise DataError("empty_dataset", root, detail=f"no class directories (expected ROOT/<class>/<image>){hint}")
    splits = [c for c in folders if c in SPLIT_NAMES]
    if "train" in splits and len(splits) > 1 and any(e.is_dir() for e in os.scandir(os.path.join(root, "train"))):
        other = next(c for c in splits if c != "train")
        raise DataError("empty_dataset", root, detail=f"this looks like a dataset root (it holds "
                        f"{', '.join(s + '/' for s in splits)}), not one split: pass {os.path.join(root, 'train')} "
                        f"as the data (and {os.path.join(root, other)} as eval.data)")
    walk = _Walk()
    label_of = {c: y for y, c in enumerate(classes)}
    for name in folders:
        cdir = os.path.join(root, name)
        if os.path.islink(cdir):   # the class's tree is the link's target
            walk.links.append((label_of[name], os.path.realpath(cdir), cdir))
        else:
            walk.tree(cdir, os.path.realpath(cdir), label_of[name])
    walk.follow_links()
    keep = _first_of_each_file(walk.rows, walk.skipped)
    if not keep.size:
        raise DataError("empty_dataset", root, detail="no .jpg/.jpeg/.png files under the class directories")
    r = walk.rows
    label = np.frombuffer(r.label, np.int64)[keep]
    sources = [r.paths[i] for i in keep.tolist()]
    for fid, (p, y, size) in enumerate(zip(sources, label.tolist(), np.frombuffer(r.size, np.int64)[keep].tolist())):
        b.add(fid, 0, size, y, os.path.relpath(p, root))
    stats = np.stack([np.frombuffer(a, np.int64)[keep] for a in (r.size, r.mtime, r.ctime)], axis=1)
    root_st = os.stat(root)
    extra = {root: [root_st.st_mtime_ns, root_st.st_ctime_ns], **walk.dir_stats}
    listed = os.path.join(root, CLASSES_FILE)
    if os.path.isfile(listed):
        st = os.stat(listed)
        extra[listed] = [st.st_mtime_ns, st.st_ctime_ns]
    return {"sources": sources, "source_stats": stats, "classes": classes, "skipped": walk.skipped,
            "extra_stats": extra}


def _first_of_each_file(rows: _Rows, skipped: list) -> np.ndarray:
    """Row positions to index: the first row of each real file (by device and inode), grouped by label in
    scan order; the other rows of a file are listed in ``skipped`` as ``duplicate_file``."""
    n = len(rows.paths)
    if not n:
        return np.zeros(0, np.int64)
    ident = np.stack([np.frombuffer(rows.dev, np.uint64), np.frombuffer(rows.ino, np.uint64)], axis=1)
    _, first, inverse = np.unique(ident, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    dup = np.flatnonzero(first[inverse] != np.arange(n))
    for i in dup.tolist():
        skipped.append({"path": rows.paths[i], "offset": None, "reason": "duplicate_file",
                        "detail": f"the same file as {rows.paths[first[inverse[i]]]}; indexed once, there"})
    keep = np.sort(first)
    label = np.frombuffer(rows.label, np.int64)[keep]
    return keep[np.argsort(label, kind="stable")]
