"""``vitdata preview``: the curriculum as the model would see it at given epochs, as one PNG grid.

For each epoch asked for, the training schedule (same options as ``vitdata train``: ``--recipe``,
``--curriculum``, ``--size-curriculum``, ``--patch-erasing``, ``--image-size``, ``--epochs``...) gives
the knobs; a few images of the dataset are shown at that epoch's image size in three views: full,
low-pass cropped (EfficientTrain's Fourier crop at ``lowpass_size``; the same as full when the
schedule has none), and PatchErased (at ``erase_ratio``; the same as full when 0). Images are
centre-cropped rather than randomly cropped and RandAugment is left out, so the views differ only by
the curriculum's own operations (:func:`vitdata.report.curriculum_rows`).

    vitdata preview --data ROOT --epoch 0,3,5 --recipe efficienttrain --out grid.png
"""
from __future__ import annotations

import argparse

from vitdata.datasets.sources import resolve_sources
from vitdata.report import curriculum_rows, plot_samples
from vitdata.train import build_schedule, parse_config

STEPS_PER_EPOCH = 100  # the schedule's step resolution; the preview shows each epoch's first step


def main(argv=None, prog: str = "vitdata preview") -> int:
    from vitdata.loader import OutputConfig
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                epilog="Every option of vitdata train is accepted too (--data, --recipe, --curriculum, "
                                       "--size-curriculum, --patch-erasing, --image-size, --epochs, ...).")
    p.add_argument("--epoch", default="0", help="epoch or comma-separated epochs to show (0-based)")
    p.add_argument("--out", default="preview.png", help="output PNG")
    p.add_argument("--images", type=int, default=4, help="images per row")
    own, rest = p.parse_known_args(argv)
    cfg = parse_config(rest, prog)
    source, _ = resolve_sources(cfg.data, cfg.train, cfg.val, synthetic_samples=cfg.synthetic_samples,
                                require_val=False)
    epochs = [int(e) for e in str(own.epoch).split(",") if e.strip()]
    # vitdata train's loader normalises with OutputConfig's mean/std; the grid undoes the same ones.
    out = OutputConfig()
    rows, titles, knobs = curriculum_rows(source, build_schedule(cfg, STEPS_PER_EPOCH), epochs, cfg.patch_size,
                                          out.mean, out.std, n=own.images, seed=cfg.seed)
    plot_samples(rows, own.out, titles)
    for e, k in zip(epochs, knobs):
        print(f"epoch {e}: {k}")
    print(f"wrote {own.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
