"""Levels: each photo stored once more at 1/2, 1/4 and 1/8 of its size, so a small curriculum step decodes a small file.

A reduced IDCT (:mod:`.scaled`) saves the IDCT, colour conversion and resize but not the entropy decoding
of the whole file, so a 64 px step still pays about two thirds of a 224 px step's decode. A level is the
photo decoded once at 1/2 or 1/4 (libjpeg-turbo's DCT scaling, the same pixels :func:`.scaled.open_scaled`
gives; the 1/8 level is the 1/4 level's 2 x 2 box mean, :data:`DERIVED`) and re-encoded as a JPEG of a
quarter, a sixteenth or a sixty-fourth of the pixels. The 1/8 level is for multi-megapixel photos, whose
small steps' windows are many times the output: on 1,600-3,200 px photos it took the full curriculum's
64 px step from 0.37x to 0.22x of its 224 px step's cost. A step whose crop window stays
at least ``f`` times the output side across (never upsampled) decodes the window from level ``f`` instead
of the photo. The window is the one drawn in the photo's coordinates (:mod:`.crop`), mapped into the level
(pixel k of level f covers photo pixels [k f, (k+1) f), as in a reduced IDCT): the same part of the scene, the
pixels differing from a full decode + resize by the level's reduced IDCT and its re-encoding (quality 95, 4:4:4;
on the 403 ImageNet photos of the tests the mean absolute difference is pinned <= 2/255).

A store holds the levels of one index (its fingerprint names it: a changed dataset never reads another's
levels): ``levels.npz`` (per factor the byte offsets and the level's width and height, 0 where the sample
has none), ``level-<f>.bin`` (the JPEGs back to back) and ``meta.json``. It is
written in a temporary folder and renamed into place, so a store is whole or absent. Only plain JPEGs
(:attr:`.scaled.Header.reducible`) get levels, and only those that decode: a file the decoder refuses has
none, so it meets the decoder exactly as without levels. What a sample may read is chosen per step by
:meth:`Levels.factor`.
"""
from __future__ import annotations

import functools
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable

import numpy as np

from vitdata.decode.crop import CropBox
from vitdata.decode.scaled import open_scaled, probe, window_in

FACTORS = (8, 4, 2)       # the levels a build stores, largest first (a store lists its own: meta["factors"])
QUALITY = 95              # JPEG quality of a level (4:4:4: the level keeps the chroma the photo holds)
FORMAT = "vitdata-levels/1"
MIN_SIDE = 16             # a level narrower than this is not stored
# A level made from a smaller factor's pixels, not decoded again: the 1/8 level is the 1/4 level's 2 x 2 box
# mean (Pillow's reduce). The 1/8 IDCT gives each 8 x 8 block's DC term, which the 2 x 2 mean of the 1/4
# IDCT equals up to rounding and chroma upsampling (measured: 0.35-0.44/255 mean absolute difference on
# 200 photos), and deriving it saves a third entropy decode of the photo: a build costs 2.8 ms of CPU per
# ImageNet photo, against 2.7 without the 1/8 level and 3.8 with it decoded.
DERIVED = {8: 4}


def store_dir(root: str, fingerprint: str) -> str:
    """The folder of the store of the index with ``fingerprint`` under ``root``."""
    return os.path.join(root, f"levels-{fingerprint[:16]}")


def encode_levels(data: bytes | None, quality: int = QUALITY) -> list[bytes | None]:
    """The level JPEGs of one photo's bytes, by :data:`FACTORS`; None for a level the photo does not get
    (not a plain JPEG, too small, or a decode that fails)."""
    none = [None] * len(FACTORS)
    if data is None:
        return none
    try:
        head = probe(data)
    except Exception:
        return none
    if not head.reducible:
        return none
    images: dict = {}
    for f in sorted(FACTORS):       # smallest factor first: a derived level's source is decoded before it
        if min(head.width, head.height) < f * MIN_SIDE:
            images[f] = None
        elif DERIVED.get(f) in images and images[DERIVED[f]] is not None:
            images[f] = images[DERIVED[f]].reduce(f // DERIVED[f])
        else:
            try:
                images[f], _ = open_scaled(data, f)
            except Exception:   # the decoder refuses the file: no level, so it fails as it does without one
                return none
    out = []
    for f in FACTORS:
        if images[f] is None:
            out.append(None)
            continue
        buf = io.BytesIO()
        images[f].save(buf, "JPEG", quality=quality, subsampling=0)
        out.append(buf.getvalue())
    return out


def build_levels(samples: Iterable[bytes | None], n: int, root: str, fingerprint: str, workers: int = 1,
                 progress: Callable[[int], None] | None = None) -> str:
    """Write the store of the index with ``fingerprint`` (``n`` samples, ``samples`` its bytes by id, None
    for one that gets no level) under ``root``; returns its folder. An existing whole store is kept."""
    final = store_dir(root, fingerprint)
    if os.path.exists(os.path.join(final, "meta.json")):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.perf_counter()
    offsets = {f: np.zeros(n + 1, np.int64) for f in FACTORS}
    sizes = {f: np.zeros((n, 2), np.int32) for f in FACTORS}
    blobs = {f: open(os.path.join(tmp, f"level-{f}.bin"), "wb") for f in FACTORS}
    try:
        i = -1
        for i, levels in enumerate(_encoded(samples, workers)):
            for f, jpeg in zip(FACTORS, levels):
                offsets[f][i + 1] = offsets[f][i] + (len(jpeg) if jpeg else 0)
                if jpeg:
                    blobs[f].write(jpeg)
                    sizes[f][i] = _jpeg_size(jpeg)
            if progress is not None:
                progress(i + 1)
        if i + 1 != n:
            raise ValueError(f"levels: {i + 1} samples given for an index of {n}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # nothing half-built stays beside the stores
        raise
    finally:
        for b in blobs.values():
            b.close()
    arrays = {f"offsets_{f}": offsets[f] for f in FACTORS} | {f"size_{f}": sizes[f] for f in FACTORS}
    np.savez(os.path.join(tmp, "levels.npz"), **arrays)
    meta = {"format": FORMAT, "fingerprint": fingerprint, "samples": n, "factors": list(FACTORS),
            "quality": QUALITY, "with_level": {str(f): int((sizes[f][:, 0] > 0).sum()) for f in FACTORS},
            "bytes": {str(f): int(offsets[f][-1]) for f in FACTORS},
            "build_s": round(time.perf_counter() - t0, 3)}
    with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1)
    try:
        os.rename(tmp, final)
    except OSError:                 # another process finished the same store first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _encoded(samples: Iterable[bytes | None], workers: int):
    """:func:`encode_levels` of each sample, in order, on ``workers`` threads (Pillow releases the GIL while it
    decodes and encodes) with at most 4 per thread in flight, so memory stays bounded on any dataset. Threads,
    not processes: a build inside a trainer or a benchmark leaves no child process behind."""
    if workers <= 1:
        yield from map(encode_levels, samples)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="vitdata-levels") as pool:
        pending: deque = deque()
        for data in samples:
            pending.append(pool.submit(encode_levels, data))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _jpeg_size(jpeg: bytes) -> tuple[int, int]:
    head = probe(jpeg)
    return head.width, head.height


class Levels:
    """A store opened for reading (the blobs memory-mapped); :func:`open_levels` keeps one per process."""

    def __init__(self, path: str, fingerprint: str | None = None, samples: int | None = None):
        try:
            with open(os.path.join(path, "meta.json"), encoding="utf-8") as fh:
                self.meta = json.load(fh)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{path}: no levels store ({e})") from e
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        if fingerprint is not None and self.meta["fingerprint"] != fingerprint:
            raise ValueError(f"{path}: levels of another index (fingerprint {self.meta['fingerprint'][:16]}, "
                             f"this index {fingerprint[:16]})")
        if samples is not None and int(self.meta["samples"]) != samples:
            raise ValueError(f"{path}: levels of {self.meta['samples']} samples, this index has {samples}")
        self.path = path
        with np.load(os.path.join(path, "levels.npz")) as z:
            # the store's own factors: one built before a factor was added still reads
            self.factors = tuple(sorted((int(f) for f in self.meta["factors"]), reverse=True))
            self.offsets = {f: z[f"offsets_{f}"] for f in self.factors}
            self.sizes = {f: z[f"size_{f}"] for f in self.factors}
        for f in self.factors:   # a cut or swapped blob would hand the decoder bad JPEGs for sound photos
            blob = os.path.join(path, f"level-{f}.bin")
            have = os.path.getsize(blob) if os.path.exists(blob) else None
            if have != int(self.offsets[f][-1]):
                raise ValueError(f"{blob}: {have} bytes, the store's offsets say {int(self.offsets[f][-1])}: a damaged "
                                 "store; remove the folder and build it again with 'vitdata levels'")
        self._blobs = {}

    def factor(self, sid: int, box: CropBox, size: int) -> int:
        """The largest stored factor f of sample ``sid`` with the window ``box`` at least ``f * size`` across,
        else 1 (decode the photo)."""
        for f in self.factors:
            if box.w >= f * size and box.h >= f * size and self.sizes[f][sid, 0] > 0:
                return f
        return 1

    def data(self, sid: int, f: int) -> bytes:
        """Level ``f``'s JPEG of sample ``sid``."""
        blob = self._blobs.get(f)
        if blob is None:
            path = os.path.join(self.path, f"level-{f}.bin")
            blob = self._blobs[f] = np.memmap(path, np.uint8, "r") if os.path.getsize(path) else np.empty(0, np.uint8)
        o = self.offsets[f]
        return blob[o[sid]:o[sid + 1]].tobytes()

    def cut(self, sid: int, f: int, box: CropBox):
        """``box`` (photo coordinates) in level ``f`` of ``sid``: :func:`.scaled.window_in`."""
        lw, lh = (int(v) for v in self.sizes[f][sid])
        return window_in(box, f, lw, lh)


@functools.lru_cache(maxsize=4)
def open_levels(path: str) -> Levels:
    """The :class:`Levels` at ``path``, opened once per process (DALI source workers, DataLoader workers)."""
    return Levels(path)
