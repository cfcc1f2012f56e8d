"""``vitdata preview``: the curriculum as the model would see it at given epochs, as one PNG grid.

For each epoch asked for, the training schedule (same options as ``vitdata train``: ``--recipe``,
``--curriculum``, ``--size-curriculum``, ``--patch-erasing``, ``--image-size``, ``--epochs``...) gives
the knobs; a few images of the dataset are shown at that epoch's image size in three views: full,
low-pass cropped (EfficientTrain's Fourier crop at ``lowpass_size``; the same as full when the
schedule has none), and PatchErased (at ``erase_ratio``; the same as full when 0). Images are
centre-cropped rather than randomly cropped and RandAugment is left out, so the views differ only by
the curriculum's own operations.

    vitdata preview --data ROOT --epoch 0,3,5 --recipe efficienttrain --out grid.png
"""
from __future__ import annotations

import argparse
import io
import os

import numpy as np
import torch

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_images(source: str, n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` images of ``source`` (one per class first), centre-cropped and resized to ``size``:
    (n, 3, size, size) float32, normalised with the ImageNet mean/std."""
    from PIL import Image

    from vitdata.index import SampleReader, open_index
    index = open_index(source)
    reader = SampleReader(index)
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(index.num_classes):  # one of each class, then random
        ids = np.flatnonzero(index.label == c)
        if len(ids) and len(picks) < n:
            picks.append(int(rng.choice(ids)))
    while len(picks) < min(n, len(index)):
        picks.append(int(rng.integers(len(index))))
    out = []
    for i in picks:
        img = Image.open(io.BytesIO(reader.read(i))).convert("RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        img = img.resize((size, size), Image.BICUBIC)
        out.append((np.asarray(img, np.float32) / 255 - MEAN) / STD)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Normalised (N, 3, H, W) -> (N, H, W, 3) uint8."""
    img = x.permute(0, 2, 3, 1).float().numpy() * STD + MEAN
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def views(images: torch.Tensor, knobs, patch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The three views of ``images`` (already at knobs.image_size) under ``knobs``."""
    from vitdata import kernels
    full = images
    low = kernels.lowpass_crop(images, knobs.lowpass_size) if knobs.lowpass_size else images
    erased = images
    if knobs.erase_ratio > 0:
        grid = (images.shape[-2] // patch_size, images.shape[-1] // patch_size)
        params = kernels.sample_patch_erase_params(images.shape[0], grid, float(knobs.erase_ratio),
                                                   torch.Generator().manual_seed(seed))
        erased = kernels.patch_erase(images, params, patch_size)
    return {"full": full, "low-pass": low, "erased": erased}


def preview_rows(source: str, epochs: list[int], cfg, n: int = 4, steps_per_epoch: int = 100):
    """Rows for ``vitdata.report.plot_samples``: per epoch, the n images in each view, side by side.

    Returns (rows, column titles, knobs per epoch)."""
    from vitdata.train import build_schedule
    sched = build_schedule(cfg, steps_per_epoch)
    rows, all_knobs = [], []
    for e in epochs:
        k = sched(min(max(e, 0), cfg.epochs - 1), 0)
        imgs = load_images(source, n, k.image_size, seed=cfg.seed)
        v = views(imgs, k, cfg.patch_size, seed=cfg.seed + e)
        label = f"epoch {e}\n{k.image_size}px lp={k.lowpass_size or '-'}\nerase={k.erase_ratio:g}"
        # The low-pass view is smaller (B x B); each tile has its own axes, so it is shown stretched.
        tiles = [to_uint8(v[name])[i] for i in range(len(imgs)) for name in ("full", "low-pass", "erased")]
        rows.append((label, tiles))
        all_knobs.append(k)
    titles = [name for _ in range(n) for name in ("full", "low-pass", "erased")]
    return rows, titles, all_knobs


def main(argv=None, prog: str = "vitdata preview") -> int:
    from vitdata.train import TrainConfig, parse_config
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                epilog="Every option of vitdata train is accepted too (--data, --recipe, --curriculum, "
                                       "--size-curriculum, --patch-erasing, --image-size, --epochs, ...).")
    p.add_argument("--epoch", default="0", help="epoch or comma-separated epochs to show (0-based)")
    p.add_argument("--out", default="preview.png", help="output PNG")
    p.add_argument("--images", type=int, default=4, help="images per row")
    own, rest = p.parse_known_args(argv)
    cfg: TrainConfig = parse_config(rest, prog)
    if cfg.data or cfg.train:
        source = cfg.train or os.path.join(cfg.data, "train")
    else:
        from vitdata.train import resolve_data
        source = resolve_data(cfg, 0)[0]
    epochs = [int(e) for e in str(own.epoch).split(",") if e.strip()]
    rows, titles, knobs = preview_rows(source, epochs, cfg, own.images)
    from vitdata.report import plot_samples
    plot_samples(rows, own.out, titles)
    for e, k in zip(epochs, knobs):
        print(f"epoch {e}: {k}")
    print(f"wrote {own.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
