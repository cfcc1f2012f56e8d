"""Files a decoder refused, kept beside the index so that every later run on the same data skips them before
reading them (a fresh process, an evaluation loader, another rank).

The loader's quarantine (``vitdata.loader.quarantine``) finds such files: their headers pass every check but
the decoder refuses the coded data, which on DALI costs a probe and a redo of the step. :class:`BadFiles`
keeps what it found in the cache, at ``<cache>/index/<hash of the source>.bad.json`` beside the source's
index, keyed by each file's identity: the path, with the size and mtime it had when indexed, and for a
tar member its byte offset, length and key. An entry whose file has changed since (another size or mtime:
the index is rebuilt and the identity no longer matches) no longer applies, and is dropped at the next
write. A file is keyed by identity, not by sample id, so an entry survives an index rebuilt for another
reason (a file added beside it).

Writers: several ranks, or runs, may add at once. Each write takes an exclusive ``flock`` on
``<store>.lock``, reads the store, merges its own entries in (a union: an entry is never lost), and
replaces the store atomically (:func:`vitdata.io.atomic_write`). Readers never lock: they see a whole old
or new store. On a filesystem without locks the merge is best effort (two writers at one instant may
keep one's entries only; the other's are found again). A store that cannot be read or written (a damaged
file, a read-only cache) is reported once on stderr and ignored: it only saves work.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys

import numpy as np

from vitdata.io import atomic_write

try:
    import fcntl
except ImportError:
    fcntl = None

FORMAT = 1


def store_path(index) -> str:
    """Where the bad files of ``index``'s source are kept: beside its default index in the cache."""
    from vitdata.data.index import default_index_path

    return default_index_path(index.spec)[:-len(".npz")] + ".bad.json"


def _identity(index, sid: int) -> dict:
    fid = int(index.file_id[sid])
    size, mtime = (int(v) for v in index.source_stats[fid][:2])
    return {"path": index.sources[fid], "size": size, "mtime_ns": mtime, "offset": int(index.offset[sid]),
            "length": int(index.length[sid]), "key": index.key(sid)}


def _key(e: dict) -> tuple:
    return (e.get("path"), e.get("offset"), e.get("size"), e.get("mtime_ns"))


class BadFiles:
    """The bad-file store of one index (see the module docstring)."""

    def __init__(self, index, path: str | None = None):
        self.index = index
        self.path = path or store_path(index)
        self._fids: dict | None = None      # path -> file id, and (file, offset) keys sorted: built on the first
        self._sorted = self._order = None   # lookup that an entry's stored id does not answer
        self._warned = False

    # -- reading -----------------------------------------------------------------------------------------
    def _read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            self._warn(f"cannot read {self.path} ({e}); files refused earlier will be found again")
            return []
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), list):
            self._warn(f"{self.path} is not a vitdata bad-file store of format {FORMAT}; ignored")
            return []
        return [e for e in data["entries"] if isinstance(e, dict)]

    def _id_of(self, e: dict) -> int | None:
        """The sample id of entry ``e`` in this index when the file is still the one it names, else None."""
        sid = e.get("id")
        if not (isinstance(sid, int) and 0 <= sid < len(self.index)
                and (self.index.sources[int(self.index.file_id[sid])], int(self.index.offset[sid]))
                == (e.get("path"), e.get("offset"))):
            sid = self._locate(e.get("path"), e.get("offset"))
        if sid is None:
            return None
        ident = _identity(self.index, sid)
        return sid if ident == {k: e.get(k) for k in ident} else None

    def _locate(self, path, offset) -> int | None:
        """The id of the sample at ``offset`` of file ``path`` in this index, or None."""
        idx = self.index
        if self._fids is None:
            self._fids = {p: f for f, p in enumerate(idx.sources)}
        f = self._fids.get(path)
        if f is None or not isinstance(offset, int):
            return None
        if idx.kind == "imagefolder":        # one sample per file: the id is the file's
            return f if offset == 0 else None
        if self._sorted is None:             # tar members: (file, offset) sorted once, then bisected
            key = (idx.file_id.astype(np.int64) << 40) | idx.offset
            self._order = np.argsort(key, kind="stable")
            self._sorted = key[self._order]
        k = (f << 40) | offset
        j = int(np.searchsorted(self._sorted, k))
        return int(self._order[j]) if j < len(self._sorted) and self._sorted[j] == k else None

    def known(self) -> list[dict]:
        """The store's entries that apply to this index: dicts id, reason, path (as the index describes the
        sample), detail (the decoder's words when it was found)."""
        out = []
        for e in self._read():
            sid = self._id_of(e)
            if sid is not None:
                out.append({"id": sid, "reason": str(e.get("reason", "decode_error")),
                            "path": self.index.describe(sid), "detail": str(e.get("detail", ""))})
        return out

    # -- writing -----------------------------------------------------------------------------------------
    def add(self, entries: list[dict]) -> None:
        """Merge ``entries`` (dicts id, reason, detail) into the store under its lock (see the module docstring)."""
        if not entries:
            return
        new = [dict(_identity(self.index, int(e["id"])), id=int(e["id"]), reason=str(e["reason"]),
                    detail=str(e.get("detail", ""))[:500]) for e in entries]
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with self._locked():
                merged = {}
                for e in self._read():
                    if self._id_of(e) is not None or self._fids is not None and e.get("path") not in self._fids:
                        merged[_key(e)] = e      # still valid here, or a file this index does not hold
                for e in new:
                    merged.setdefault(_key(e), e)
                body = {"format": FORMAT, "source": self.index.spec, "entries": list(merged.values())}
                atomic_write(self.path, json.dumps(body, indent=0).encode())
        except OSError as e:
            self._warn(f"cannot keep the files a decoder refused in {self.path} ({e}); later runs find them again")

    @contextlib.contextmanager
    def _locked(self):
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                with contextlib.suppress(OSError):   # no locks on this filesystem: best effort
                    fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)    # releases the lock

    def _warn(self, msg: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"vitdata: {msg}", file=sys.stderr)
