"""Reading a sample's encoded bytes: :class:`SampleReader` (``pread`` at the indexed offset, checksums).
"""
from __future__ import annotations

import os
import stat
import threading
import zlib

from vitdata.errors import DataError


class SampleReader:
    """Encoded bytes of sample ``i``, read with ``os.pread`` at the indexed offset.

    Shard descriptors are opened once per process and shared by threads (``pread`` does not move a
    file position); ImageFolder files are opened per read. A pickled or forked reader reopens its own.
    With ``verify=True`` and checksums in the index, a CRC-32 mismatch raises ``checksum_mismatch``.
    ``skip_corrupt``: the sample checks (:func:`vitdata.data.checks.check_sample`) refuse a JPEG that libjpeg
    decodes with a warning (``corrupt_data``) instead of delivering it and counting it. ``check_png_data``:
    they inflate a PNG's image data too (:mod:`vitdata.data.pngdata`).
    """

    def __init__(self, index, *, verify: bool = False, skip_corrupt: bool = False, check_png_data: bool = True):
        self.index = index
        self.verify = verify and index.checksum is not None
        self.skip_corrupt = bool(skip_corrupt)
        self.check_png_data = bool(check_png_data)
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
