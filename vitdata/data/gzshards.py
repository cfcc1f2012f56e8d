"""Gzip-compressed WebDataset shards (``.tar.gz``, ``.tgz``): decompressed once into the cache, then indexed
and read as plain ``.tar`` files.

vitdata reads a sample by (offset, length) with ``pread``, which a gzip stream cannot serve, so each
compressed shard is inflated once into ``$VITDATA_CACHE/shards/<hash>.tar``; the hash covers the shard's
absolute path, size and mtime, so a changed shard is inflated again and an unchanged one never is. Before
writing, the uncompressed size is read from the gzip trailer (ISIZE, the size modulo 2**32: a lower bound
for shards over 4 GiB) and checked against the free space of the cache's file system (a trailer larger than deflate's ~1032:1 ratio
allows is no trailer: the file is refused as cut short); after writing, the
bytes written are checked against the trailer, so a truncated or concatenated stream is refused rather
than indexed. A tqdm progress bar shows on stderr when tqdm is importable. To convert shards yourself
instead: ``gunzip -k shard-000.tar.gz`` (or ``for f in *.tar.gz; do gunzip -k "$f"; done``).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import sys
import zlib

from vitdata.errors import DataError

__all__ = ["GZ_SUFFIXES", "is_gz", "inflated_path", "inflate"]

GZ_SUFFIXES = (".tar.gz", ".tgz")
_CHUNK = 4 << 20
_HEADROOM = 256 << 20       # free space left over after an inflated shard
_MAX_RATIO = 1032           # deflate gives at most ~1032 bytes per compressed byte


def is_gz(path: str) -> bool:
    return path.lower().endswith(GZ_SUFFIXES)


def inflated_path(path: str) -> str:
    from vitdata.io import cache_dir

    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:24]
    stem = os.path.basename(path)
    stem = stem[:-len(".tar.gz")] if stem.lower().endswith(".tar.gz") else stem[:-len(".tgz")]
    return os.path.join(cache_dir(), "shards", f"{stem}-{key}.tar")


def _trailer_size(path: str) -> int:
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            raise DataError("unreadable", path, detail="named like a gzip shard but not gzip data (no 1f 8b magic)")
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def inflate(path: str, progress: bool = True) -> str:
    """The path of ``path`` inflated into the cache (inflating it now unless already there)."""
    out = inflated_path(path)
    if os.path.isfile(out):
        return out
    expect = _trailer_size(path)
    size = os.path.getsize(path)
    if expect > _MAX_RATIO * size:
        # a cut-short file ends inside the deflate stream: its last 4 bytes are not a trailer
        raise DataError("truncated", path, detail=f"cannot inflate: its last 4 bytes record {expect} bytes, more "
                        f"than deflate gives from {size} compressed bytes, so the file is cut short (or not one "
                        f"gzip stream); check the file, or gunzip it yourself")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    free = shutil.disk_usage(os.path.dirname(out)).free
    if expect + _HEADROOM > free:
        raise DataError("unreadable", path, detail=f"inflating needs {expect / 2**30:.2f} GiB in {os.path.dirname(out)}, "
                        f"{free / 2**30:.2f} GiB free: set VITDATA_CACHE to a larger disk, or gunzip the shards "
                        f"yourself and pass the .tar files")
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, file=sys.stderr,
                       desc=f"vitdata: inflating {os.path.basename(path)}", leave=False)
        except ImportError:
            print(f"vitdata: inflating {path} into {out}", file=sys.stderr)
    tmp = f"{out}.{os.getpid()}.tmp"
    written = 0
    try:
        with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as src, open(tmp, "wb") as dst:
            last = 0
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                dst.write(chunk)
                written += len(chunk)
                if bar is not None:
                    pos = raw.tell()
                    bar.update(pos - last)
                    last = pos
            dst.flush()
            os.fsync(dst.fileno())
        if written % (1 << 32) != expect:
            raise DataError("truncated", path, detail=f"inflated to {written} bytes but the gzip trailer records "
                            f"{expect} (mod 2**32)")
        os.replace(tmp, out)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError("truncated" if isinstance(e, EOFError) else "unreadable", path,
                        detail=f"cannot inflate ({type(e).__name__}: {e}); check the file, or gunzip it yourself") from e
    finally:
        if bar is not None:
            bar.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
