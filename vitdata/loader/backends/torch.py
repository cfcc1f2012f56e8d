"""The torch backend: a ``torch.utils.data.DataLoader`` with Pillow decode and torchvision v2 transforms
equivalent to the DALI graph (the baseline, and the fallback where DALI cannot be installed).

The dataset lives in this importable module so DataLoader workers started with ``spawn`` can unpickle
it. Each item is a position in the epoch's control (the same control the DALI source reads); randomness
comes from a generator seeded by (seed, epoch, rank, position), so results do not depend on
``num_workers``. The backend has no state of its own: ``start`` at a position is its resume.

Colour policy (the same as DALI's decoder, :func:`vitdata.decode.decode_rgb`): EXIF orientation applied,
grayscale / CMYK / palette / RGBA converted to RGB, 16-bit images scaled to 8 bits by 1/257.

Train crop: the window is drawn from the image's size before decoding (:mod:`vitdata.decode.crop`, the same
draw as the DALI graph's source at the same (seed, epoch, rank, position)), then resized to the step's size
with Pillow's ``resize(box=...)``. With ``LoaderConfig.decode_scale`` "auto" or "on", a plain JPEG whose window
is at least twice the step's size across is decoded at 1/2, 1/4 or 1/8 scale (:mod:`vitdata.decode.scaled`) and the
same window is read from the smaller image. With a levels store (``LoaderConfig.decode_levels``), a window at least
twice (four times) the step's size across is read from the photo's stored 1/2 (1/4) copy instead
(:mod:`vitdata.decode.levels`).

Decoder failures (``vitdata.loader.quarantine``): a sample whose header passes but whose data Pillow refuses on
full decode is substituted in the dataset itself by the same rule as a header failure (the next usable id
of the epoch order), with status ``decode_error``; the item names the refused ids with Pillow's words
and the backend adds them to the loader's quarantine, so later epochs skip them before reading. A reduced
decode that fails is retried as the full decode, so only the full decode's verdict (and words) count.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vitdata.loader.backends.base import Backend, BackendContext, RawBatch, start_method
from vitdata.errors import DataError
from vitdata.data.checks import MAX_SUBSTITUTE_ATTEMPTS, resolve_sample
from vitdata.curriculum.schedule import NUM_MAG_BINS, magnitude_to_bin
from vitdata.decode import crop_rng, decode_rgb, open_scaled, probe, reduction_factor, sample_crop_box, scaled_box

__all__ = ["TorchBackend", "EpochDataset", "decode_rgb"]


def torchvision_interpolation(name: str):
    """torchvision's ``InterpolationMode`` for a filter of ``vitdata.loader.config.INTERPOLATIONS``: the same name,
    except "triangular" (DALI's antialiased linear filter), which torchvision lacks: its antialiased bilinear."""
    from torchvision.transforms import InterpolationMode

    return InterpolationMode[{"triangular": "bilinear"}.get(name, name).upper()]


class EpochDataset(torch.utils.data.Dataset):
    """Map-style dataset over positions of one epoch; ``control`` is set by the loader before each epoch."""

    def __init__(self, reader, index, batch_size: int, cfg, train: bool, rank: int, levels: str | None = None):
        self.reader, self.index, self.batch_size, self.train, self.rank = reader, index, batch_size, train, rank
        self.levels = levels if train else None
        a = cfg.augment
        self.scale, self.ratio, self.hflip = tuple(a.scale), tuple(a.ratio), a.hflip
        self.randaug = a.randaug and train
        self.interp = torchvision_interpolation(a.interpolation)
        # the window's resize runs in Pillow (resize(box=...) reads a fractional window of a reduced decode)
        self.resample = Image.Resampling[{"triangular": "bilinear"}.get(a.interpolation, a.interpolation).upper()]
        self.decode_scale = getattr(cfg, "decode_scale", "auto") != "off"
        self.randaug_interp = torchvision_interpolation(a.randaug_interpolation)
        self.eval_size = cfg.eval.image_size or cfg.image_size
        self.eval_resize = int(round(self.eval_size / cfg.eval.crop_pct))
        self.seed, self.max_pixels = cfg.seed, cfg.max_pixels
        self.control = None

    def __len__(self) -> int:
        return 0 if self.control is None else len(self.control["ids"])

    def __getitem__(self, pos: int):
        from torchvision.transforms import v2

        ctl = self.control
        ids = ctl["ids"]
        orig = int(ids[pos])
        step = pos // self.batch_size
        size = int(ctl["step_size"][step]) if self.train else None
        sid, status, im, box, refused = self._decode(ids, pos, size)
        if self.train:
            im = im.resize((size, size), self.resample, box=box)
            ops = [v2.RandomHorizontalFlip(self.hflip)] if self.hflip > 0 else []
            n = int(ctl["step_num_ops"][step])
            if self.randaug and n > 0:
                m = float(ctl["step_magnitude"][step]) + float(ctl["extra_magnitude"][pos])
                ops.append(v2.RandAugment(num_ops=n, magnitude=int(magnitude_to_bin(m)),
                                          num_magnitude_bins=NUM_MAG_BINS, interpolation=self.randaug_interp,
                                          fill=128))
            seed = int(np.random.SeedSequence([self.seed, int(ctl["epoch"]), self.rank, pos, 0x70C4])
                       .generate_state(1)[0])
            # v2 transforms draw from torch's global generator: fork it so the caller's stream is untouched
            # (with num_workers=0 this runs in the trainer's process).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                im = v2.Compose(ops)(im) if ops else im
        else:
            im = v2.Compose([v2.Resize(self.eval_resize, interpolation=self.interp, antialias=True),
                             v2.CenterCrop(self.eval_size)])(im)
        x = v2.functional.pil_to_tensor(im)
        label = int(self.index.label[sid]) if orig >= 0 else -1
        return x, label, (sid if orig >= 0 else -1), orig, status, refused

    def _decode(self, ids: np.ndarray, pos: int, size: int | None):
        """(id, status, RGB image, window, refused) for position ``pos``: ``resolve_sample``'s choice, decoded;
        an id Pillow refuses joins the quarantine and the rule picks again. ``size``: the train step's output
        side (None for eval: full decode, no window). ``window``: the crop window in the returned image's
        coordinates (left, top, right, bottom, fractional after a reduced decode). ``refused``: a tuple of
        (id, Pillow's words)."""
        quarantine = self.control.get("quarantine_ids") or frozenset()
        refused = []
        for _ in range(MAX_SUBSTITUTE_ATTEMPTS):
            sid, status, data = resolve_sample(self.reader, self.index, ids, pos, self.max_pixels, quarantine)
            try:
                return (sid, status, *self._decode_window(data, pos, size, sid), tuple(refused))
            except Exception as e:   # Pillow: OSError, SyntaxError, ValueError, zlib errors...
                refused.append((sid, f"Pillow: {type(e).__name__}: {e}"))
                quarantine = quarantine | {sid}
        sid = int(refused[0][0])
        raise DataError("decode_error", self.index.describe(sid), sample_id=sid,
                        detail=f"{refused[0][1]}; and no decodable substitute in the next {MAX_SUBSTITUTE_ATTEMPTS} "
                               f"tries")

    def _decode_window(self, data: bytes, pos: int, size: int | None, sid: int = -1):
        """(image, window) of sample ``sid`` (bytes ``data``); raises what the full decode raises."""
        if size is None:
            im = decode_rgb(data)
            im.load()
            return im, None
        rng = crop_rng(self.seed, int(self.control["epoch"]), self.rank, pos)
        try:
            head = probe(data)
        except Exception:
            head = None        # the full decode below raises (and names) what Pillow cannot open
        if head is not None:
            box = sample_crop_box(head.width, head.height, self.scale, self.ratio, rng)
            level = self._level(sid, box, size)
            if level is not None:
                return level
            r = reduction_factor(box.w, box.h, size, size) if self.decode_scale and head.reducible else 1
            if r > 1:
                try:
                    im, f = open_scaled(data, r)
                    return im, scaled_box(box, f)
                except Exception:
                    pass       # the full decode's verdict counts, as without decode_scale
        im = decode_rgb(data)
        im.load()
        if head is None or im.size != (head.width, head.height):
            box = sample_crop_box(im.size[0], im.size[1], self.scale, self.ratio,
                                  crop_rng(self.seed, int(self.control["epoch"]), self.rank, pos))
        return im, scaled_box(box, 1)

    def _level(self, sid: int, box, size: int):
        """(image, window) from the store's level of ``sid`` that serves ``box`` at ``size``, or None."""
        if self.levels is None or sid < 0:
            return None
        from vitdata.decode.levels import open_levels

        store = open_levels(self.levels)
        f = store.factor(sid, box, size)
        if f == 1:
            return None
        try:
            im = decode_rgb(store.data(sid, f))
            im.load()
        except Exception:
            return None        # a damaged store: the photo's own decode
        return im, scaled_box(box, f)


def _worker_init(worker_id: int) -> None:
    """Each DataLoader worker leaves SIGTERM/SIGINT to a trainer that stops cleanly on them
    (``vitdata.pipelines.worker_signals``)."""
    from vitdata.pipelines.worker_signals import follow_trainer_signals
    follow_trainer_signals()


class TorchBackend(Backend):
    """A DataLoader over the positions of one epoch from a start step; workers get the control with the
    dataset."""

    name = "torch"

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        self.dataset = EpochDataset(ctx.reader, ctx.index, ctx.batch_size, ctx.cfg, ctx.train, ctx.rank, ctx.levels)
        self.it = None
        self._norm = None   # (mean, std) on the output device, made at the first batch

    def start(self, control: dict, epoch: int, position: int) -> None:
        from torch.utils.data import DataLoader

        self.it = None
        q = self.ctx.quarantine
        self.dataset.control = dict(control, quarantine_ids=q.ids() if q is not None else frozenset())
        b, cfg = self.ctx.batch_size, self.ctx.cfg
        steps = len(control["ids"]) // b
        batches = [list(range(s * b, (s + 1) * b)) for s in range(position, steps)]
        kw = {}
        if cfg.num_workers > 0:
            import multiprocessing as mp

            kw = dict(prefetch_factor=cfg.prefetch, multiprocessing_context=mp.get_context(start_method(cfg)))
            kw["worker_init_fn"] = _worker_init
        dl = DataLoader(self.dataset, batch_sampler=batches, num_workers=cfg.num_workers,
                        collate_fn=_collate, pin_memory=self.ctx.device.type == "cuda", **kw)
        self.it = iter(dl)

    def next(self) -> RawBatch:
        imgs, labels, ids, orig, status, refused = next(self.it)
        q = self.ctx.quarantine
        if refused and q is not None:   # decoder failures: the loader's quarantine, with Pillow's words
            for sid, words in refused:
                q.add(sid, words, path=self.ctx.index.describe(sid), epoch=int(self.dataset.control["epoch"]))
        dev = self.ctx.device
        if self._norm is None:
            o = self.ctx.cfg.output
            self._norm = tuple(torch.tensor([255.0 * v for v in vals], device=dev).view(1, 3, 1, 1)
                               for vals in (o.mean, o.std))
        x = imgs.to(dev, non_blocking=True)
        x = (x.float() - self._norm[0]) / self._norm[1]
        return RawBatch(x, labels.numpy(), ids.numpy(), orig.numpy(), status.numpy(), "CHW")

    def state(self) -> dict:
        return {}

    def restore(self, state: dict | None) -> None:
        self.it = None   # nothing else to restore: start() at the loader's position is the resume

    def close(self) -> None:
        self.it = None


def _collate(items):
    imgs = torch.stack([it[0] for it in items])
    cols = [torch.tensor([it[k] for it in items], dtype=torch.int64) for k in (1, 2, 3, 4)]
    return (imgs, *cols, [r for it in items for r in it[5]])
