"""The external-source callable of the DALI graphs, and the sample check both backends share.

A DALI parallel external source runs copies of :class:`EpochSource` in worker processes, so the
callable holds no state that the main process changes while it runs. Everything that varies per
epoch (the sampler's id order, the per-step knobs, the oracle's per-sample strength) is written by
the loader into a *control file* (``ctl-<dali epoch>.npz``, atomic rename) before the pipeline reads
the first sample of that epoch; a worker loads it the first time it sees that DALI epoch index.
``SampleInfo.idx_in_epoch`` is the position in that file's order: the callable is a pure function
of (control file, position), which is what makes DALI checkpoints replay the same samples.

Per sample the callable returns (see ``OUTPUTS``):

===========  ========  =======  ==========================================================
name         dtype     shape    meaning
===========  ========  =======  ==========================================================
encoded      uint8     (L,)     the encoded image bytes (after the header check)
label        int64     ()       class index of the sample actually delivered
id           int64     ()       index position of the sample delivered (-1 for eval padding)
orig_id      int64     ()       id the sampler asked for (differs from ``id`` after a skip)
status       int32     ()       0 = ok, else 1 + position of the reason in ``errors.REASONS``
size         float32   (2,)     output (H, W) of this step (the schedule's image size)
mag_bin      int32     (n,)     RandAugment magnitude bin per op level (0..NUM_MAG_BINS-1)
active       int32     (n,)     1 where op level i < this step's number of ops, else 0
anchor       int32     (2,)     crop window's left, top in source pixels (after EXIF orientation)
shape        int32     (2,)     crop window's width, height in source pixels
decoded      int32     ()       1 when ``encoded`` holds pixels the source decoded at reduced scale
hwc          int32     (3,)     shape of those pixels (``encoded`` is them flattened); (1, 1, 3) otherwise
roi_start    float32   (2,)     the window inside those pixels: top, left (fractional)
roi_end      float32   (2,)     bottom, right
===========  ========  =======  ==========================================================

The graph reads the outputs it names (``outputs``): the crop window (``anchor``, ``shape``) with a
:class:`CropSpec`, the reduced decode's four only where the source may decode (``CropSpec.decode_scale``,
a CPU-only graph). The window is drawn here (:mod:`vitdata.decode.crop`) from (seed, epoch, rank,
position in the loader's epoch) and the image's size: the same window whether DALI decodes the file
(``decoders.image_slice``) or the source decodes it at 1/2, 1/4 or 1/8 scale (:mod:`vitdata.decode.scaled`),
and the same as the torch backend's. A reduced decode that fails hands the encoded bytes to DALI instead,
so DALI's full decoder gives its verdict on a bad file exactly as without ``decode_scale``.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass

import numpy as np

from vitdata.curriculum.schedule import magnitude_to_bin
from vitdata.data.checks import resolve_sample
from vitdata.errors import DataError

from ._parent_watch import watch_parent_if_worker

OUTPUTS = ("encoded", "label", "id", "orig_id", "status", "size", "mag_bin", "active", "anchor", "shape", "decoded",
           "hwc", "roi_start", "roi_end")
CROP_OUTPUTS = ("anchor", "shape")
SCALED_OUTPUTS = ("decoded", "hwc", "roi_start", "roi_end")


# The epoch key of a control handed to EpochSource.step_outputs (DALI's epoch indices are >= 0).
_REDO_EPOCH = -1


@dataclass(frozen=True)
class _StepInfo:
    """The two fields of DALI's ``BatchInfo`` that ``EpochSource`` reads."""
    epoch_idx: int
    iteration: int


@dataclass(frozen=True)
class CropSpec:
    """The random-resized-crop window the source draws per sample, and whether it may decode reduced JPEGs."""
    scale: tuple[float, float]
    ratio: tuple[float, float]
    seed: int
    rank: int
    decode_scale: bool = False    # decode plain JPEGs at 1/2, 1/4, 1/8 here (CPU graphs only)
    threads: int = 1              # the in-thread (per-step) source decodes a step's reduced JPEGs on this many threads
    levels: str | None = None     # a levels store of the index (vitdata.decode.levels): a window f x the step's
                                  # size across hands DALI level f's JPEG and the window mapped into it


def write_control(path: str, control: dict[str, np.ndarray]) -> None:
    """Write one epoch's control file atomically (npz, no pickle)."""
    from vitdata.io import atomic_write

    atomic_write(path, lambda f: np.savez(f, **control))


def load_control(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def control_path(directory: str, dali_epoch: int) -> str:
    return os.path.join(directory, f"ctl-{dali_epoch:06d}.npz")


# DALI hands a worker's exception to the main process as a RuntimeError holding only its text, so a
# worker's DataError travels by field instead: one JSON record per failed sample in the control
# directory, written before the exception is raised, read back by the loader when the batch fails.
_ERROR_FIELDS = ("reason", "path", "sample_id", "offset", "detail")


def write_error_record(directory: str, dali_epoch: int, position: int, err: DataError) -> None:
    """Record ``err`` (raised for epoch position ``position`` of DALI epoch ``dali_epoch``) by its fields."""
    import json

    from vitdata.io import atomic_write

    record = {k: getattr(err, k) for k in _ERROR_FIELDS}
    record.update(dali_epoch=int(dali_epoch), position=int(position), pid=os.getpid())
    try:
        atomic_write(os.path.join(directory, f"error-{int(dali_epoch):06d}-{int(position):012d}.json"),
                     json.dumps(record).encode())
    except OSError:
        pass   # the exception itself still fails the batch; only the sample's name is lost


def read_error_records(directory: str, dali_epoch: int) -> list[tuple[int, DataError]]:
    """(epoch position, DataError) of every record of DALI epoch ``dali_epoch``, by position."""
    import glob
    import json

    out = []
    for path in sorted(glob.glob(os.path.join(directory, f"error-{int(dali_epoch):06d}-*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                r = json.load(f)
            out.append((int(r["position"]), DataError(r["reason"], r["path"], sample_id=r["sample_id"],
                                                      offset=r["offset"], detail=r["detail"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda t: t[0])


class EpochSource:
    """Picklable callable for ``fn.external_source``: per sample in worker processes (``batch=False,
    parallel=True``), per step in the pipeline thread (``batch=True, parallel=False``).

    Control file arrays: ``ids`` int64 (steps*batch,) in consumption order (eval padding = -1);
    ``step_size`` int32 (steps,); ``step_magnitude`` float32 (steps,); ``step_num_ops`` int32
    (steps,); ``extra_magnitude`` float32 (steps*batch,) the oracle's per-sample addition;
    ``epoch`` int64 () the loader's epoch number (for messages); optional ``quarantine`` int64 (q,) ids a
    decoder refused (``vitdata.loader.quarantine``), substituted before they are read.
    """

    def __init__(self, reader, index, control_dir: str, batch_size: int, max_ops: int, max_pixels: int,
                 outputs: tuple[str, ...] | int = OUTPUTS[:8], crop: CropSpec | None = None):
        # outputs: names of OUTPUTS in the graph's order (an int k: the first k of the first eight: 8 train with
        # RandAugment, 6 without, 5 eval); the crop window's outputs need ``crop``
        self.outputs = tuple(OUTPUTS[:int(outputs)] if isinstance(outputs, int) else outputs)
        unknown = [n for n in self.outputs if n not in OUTPUTS]
        if unknown or (crop is None and set(self.outputs) & set(CROP_OUTPUTS + SCALED_OUTPUTS)):
            raise ValueError(f"source outputs {self.outputs}: unknown {unknown}, or a crop output without a CropSpec")
        self.crop = crop
        self.reader, self.index, self.control_dir = reader, index, control_dir
        self.batch_size, self.max_ops, self.max_pixels = int(batch_size), max(1, int(max_ops)), int(max_pixels)
        self._epoch_key = None
        self._ctl = None
        self._quarantine = None   # ids of the control's ``quarantine`` array (decoder-refused), or None
        self._pos = None      # epoch position being read (names the sample in an error)
        self._pool = None     # threads of the per-step reduced decodes (made on first use, never pickled)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_epoch_key"], state["_ctl"], state["_quarantine"], state["_pool"] = None, None, None, None
        return state

    def _control(self, dali_epoch: int) -> dict[str, np.ndarray]:
        if self._epoch_key != dali_epoch:
            self._ctl = load_control(control_path(self.control_dir, dali_epoch))
            q = self._ctl.get("quarantine")
            self._quarantine = frozenset(int(i) for i in q) if q is not None and len(q) else None
            self._epoch_key = dali_epoch
        return self._ctl

    def __call__(self, info):
        """One sample for DALI's ``SampleInfo`` (worker processes, ``batch=False``), or the whole step for a
        ``BatchInfo`` (the in-thread source, ``batch=True``: one call and stacked arrays per step instead of
        a call and eight small arrays per sample, the same values)."""
        watch_parent_if_worker()   # a DALI worker exits when the trainer dies (docs/reliability.md G6)
        batched = not hasattr(info, "idx_in_epoch")
        self._pos = None
        try:
            return self._batch(info) if batched else self._sample(info)
        except StopIteration:
            raise
        except DataError as e:
            if not batched:
                write_error_record(self.control_dir, info.epoch_idx, info.idx_in_epoch, e)
            raise
        except Exception as e:
            # Anything else (a bug, a reader that raised something unexpected) is named by sample here.
            pos, sid = self._pos, None
            try:
                sid = int(self._control(info.epoch_idx)["ids"][pos])
            except Exception:
                pass
            where = self.index.describe(sid) if sid is not None and sid >= 0 else f"epoch position {pos}"
            err = DataError("decode_error", where, sample_id=sid,
                            detail=f"source pid {os.getpid()} raised {type(e).__name__}: {e}\n"
                                   + traceback.format_exc())
            if not batched:
                write_error_record(self.control_dir, info.epoch_idx, info.idx_in_epoch, err)
            raise err from e

    def step_outputs(self, control: dict[str, np.ndarray], step: int, quarantine: frozenset) -> tuple:
        """Step ``step`` of the DALI epoch ``control`` as the in-thread source returns it, the ids of
        ``quarantine`` substituted: what the redo of a step that failed in the decoder feeds its graph
        (``vitdata.loader.backends.dali_redo``). Call it on an instance no pipeline runs."""
        self._ctl, self._epoch_key = control, _REDO_EPOCH
        self._quarantine = frozenset(quarantine) or None
        return self._batch(_StepInfo(_REDO_EPOCH, int(step)))

    def _batch(self, info):
        ctl = self._control(info.epoch_idx)
        ids, b, step = ctl["ids"], self.batch_size, info.iteration
        start = step * b
        if start >= len(ids):
            raise StopIteration
        datas, sids, status = [], np.empty(b, np.int64), np.empty(b, np.int32)
        for j in range(b):
            self._pos = start + j
            sids[j], status[j], data = self._resolve(ids, start + j, int(ids[start + j]))
            datas.append(data)
        orig = np.ascontiguousarray(ids[start:start + b], np.int64)
        pad = orig < 0
        n = self.max_ops
        size = float(ctl["step_size"][step])
        mag = float(ctl["step_magnitude"][step]) + ctl["extra_magnitude"][start:start + b].astype(np.float64)
        out = {"label": np.where(pad, -1, np.asarray(self.index.label)[sids]).astype(np.int64),
               "id": np.where(pad, -1, sids), "orig_id": orig, "status": status,
               "size": np.full((b, 2), size, np.float32),
               "mag_bin": np.repeat(magnitude_to_bin(mag)[:, None], n, axis=1),
               "active": np.repeat((np.arange(n) < int(ctl["step_num_ops"][step])).astype(np.int32)[None], b, axis=0)}
        if self.crop is not None and "anchor" in self.outputs:
            first = int(ctl.get("first_position", 0)) + start
            out.update(self._windows(datas, range(first, first + b), int(ctl["epoch"]), int(size), sids))
        else:
            out["encoded"] = [np.frombuffer(d, np.uint8) for d in datas]
        return tuple(out[k] for k in self.outputs)

    def _sample(self, info):
        ctl = self._control(info.epoch_idx)
        ids = ctl["ids"]
        pos = self._pos = info.idx_in_epoch
        if pos >= len(ids):
            raise StopIteration
        step = pos // self.batch_size
        orig = int(ids[pos])
        sid, status, data = self._resolve(ids, pos, orig)
        n = self.max_ops
        mag = float(ctl["step_magnitude"][step]) + float(ctl["extra_magnitude"][pos])
        size = float(ctl["step_size"][step])
        out = {"label": np.array(int(self.index.label[sid]) if orig >= 0 else -1, np.int64),
               "id": np.array(sid if orig >= 0 else -1, np.int64),
               "orig_id": np.array(orig, np.int64),
               "status": np.array(status, np.int32),
               "size": np.array([size, size], np.float32),
               "mag_bin": np.full(n, magnitude_to_bin(mag), np.int32),
               "active": (np.arange(n) < int(ctl["step_num_ops"][step])).astype(np.int32)}
        if self.crop is not None and "anchor" in self.outputs:
            first = int(ctl.get("first_position", 0)) + pos
            window = self._windows([data], [first], int(ctl["epoch"]), int(size), [sid])
            out.update({k: np.asarray(v[0]) for k, v in window.items()})
        else:
            out["encoded"] = np.frombuffer(data, np.uint8)
        return tuple(out[k] for k in self.outputs)

    def _windows(self, datas: list[bytes], positions, epoch: int, size: int, sids) -> dict:
        if self._pool is None and self.crop.threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.crop.threads, thread_name_prefix="vitdata-decode")
        return crop_windows(datas, positions, epoch, size, self.crop, self._pool, sids)

    def _resolve(self, ids: np.ndarray, pos: int, orig: int) -> tuple[int, int, bytes]:
        return resolve_sample(self.reader, self.index, ids, pos, self.max_pixels, self._quarantine)




def crop_windows(datas: list[bytes], positions, epoch: int, size: int, crop: CropSpec, pool=None, sids=None) -> dict:
    """The crop outputs (and ``encoded``) of samples ``datas`` (index ids ``sids``) at loader-epoch
    ``positions`` for a step of ``size`` px: each window drawn; a window a level of ``crop.levels`` serves
    goes to DALI as that level's JPEG and the window mapped into it; the plain JPEGs whose window allows it
    decoded at 1/r here (on ``pool``, a ``concurrent.futures`` executor, when given); the rest go to DALI as
    encoded bytes. Values are lists / stacked arrays over the samples, by the names of :data:`OUTPUTS`."""
    plans = [_plan(d, p, epoch, size, crop) for d, p in zip(datas, positions)]
    levels = _levels(plans, sids, size, crop)
    jobs = [(k, box, r) for k, (box, r) in enumerate(plans) if r > 1 and k not in levels]
    if pool is not None and len(jobs) > 1:
        # Pillow releases the GIL while libjpeg decodes, so the threads decode in parallel.
        done = list(pool.map(lambda job: _reduced(datas[job[0]], job[1], job[2]), jobs))
    else:
        done = [_reduced(datas[k], box, r) for k, box, r in jobs]
    reduced = {k: d for (k, _, _), d in zip(jobs, done) if d is not None}
    n = len(datas)
    out = {"encoded": [], "anchor": np.empty((n, 2), np.int32), "shape": np.empty((n, 2), np.int32),
           "decoded": np.zeros(n, np.int32), "hwc": np.tile(np.array([1, 1, 3], np.int32), (n, 1)),
           "roi_start": np.zeros((n, 2), np.float32), "roi_end": np.zeros((n, 2), np.float32)}
    for k, (box, _) in enumerate(plans):
        out["anchor"][k], out["shape"][k] = (box.x, box.y), (box.w, box.h)
        if k in levels:
            jpeg, anchor, shape, roi = levels[k]
            out["encoded"].append(np.frombuffer(jpeg, np.uint8))
            out["anchor"][k], out["shape"][k] = anchor, shape
            out["roi_start"][k], out["roi_end"][k] = roi[:2], roi[2:]
        elif k in reduced:
            pixels, roi = reduced[k]
            out["encoded"].append(pixels.reshape(-1))
            out["decoded"][k], out["hwc"][k] = 1, pixels.shape
            out["roi_start"][k], out["roi_end"][k] = roi[:2], roi[2:]
        else:
            out["encoded"].append(np.frombuffer(datas[k], np.uint8))
            out["roi_end"][k] = (box.h, box.w)
    return out


def _levels(plans, sids, size: int, crop: CropSpec) -> dict:
    """{k: (level JPEG, anchor, shape, roi)} of the samples whose window a level of ``crop.levels`` serves."""
    if crop.levels is None or sids is None:
        return {}
    from vitdata.decode.levels import open_levels

    store, out = open_levels(crop.levels), {}
    for k, ((box, _), sid) in enumerate(zip(plans, sids)):
        f = store.factor(int(sid), box, size) if sid >= 0 else 1
        if f > 1:
            out[k] = (store.data(int(sid), f), *store.cut(int(sid), f, box))
    return out


def _plan(data: bytes, position: int, epoch: int, size: int, crop: CropSpec):
    """(window, reduction factor) of one sample; factor 1: DALI decodes it (``decoders.image_slice``)."""
    from vitdata.data.checks import image_size
    from vitdata.decode import crop_rng, probe, reduction_factor, sample_crop_box

    try:
        head = probe(data)
        w, h, reducible = head.width, head.height, head.reducible
    except Exception:   # Pillow cannot open it: DALI decodes it as without decode_scale (and refuses it, or not)
        (w, h), reducible = image_size(data) or (1, 1), False
    box = sample_crop_box(w, h, crop.scale, crop.ratio, crop_rng(crop.seed, epoch, crop.rank, position))
    return box, (reduction_factor(box.w, box.h, size, size) if crop.decode_scale and reducible else 1)


def _reduced(data: bytes, box, factor: int):
    """(pixels, roi) of a reduced decode, or None when Pillow fails: DALI then decodes the bytes in full."""
    from vitdata.decode import decode_region

    try:
        return decode_region(data, box, factor)
    except Exception:
        return None
