"""``vitdata preview``: the curriculum as the model sees it at given epochs, as one PNG grid.

For each epoch asked for, the training schedule (same options as ``vitdata train``: ``--recipe``,
``--curriculum``, ``--size-curriculum``, ``--patch-erasing``, ``--image-size``, ``--epochs``...) gives
the knobs, and the training loader itself makes the first batch of that epoch: random-resized crop, flip,
RandAugment at the scheduled magnitude, EfficientTrain's low-pass crop and PatchErasing, exactly what the
model is fed. Each image is shown twice: as stored (centre crop at the epoch's size) and as the model sees
it; the row label lists the knobs (size, low-pass size, RandAugment magnitude and ops, erase ratio).

    vitdata preview --data ROOT --epoch 0,3,5 --recipe efficienttrain --out grid.png

``--data ROOT`` reads ``ROOT/train`` (``--train DIR`` names the split itself). ``--epoch`` takes 0-based
epochs of the run's ``--epochs``; one outside it is refused, not clamped.
"""
from __future__ import annotations

import argparse
import dataclasses

from vitdata.data.sources import resolve_sources
from vitdata.errors import ConfigError
from vitdata.train.report import load_images, plot_samples, to_uint8
from vitdata.train.loop import build_schedule, loader_config
from vitdata.train.config import parse_config

STEPS_PER_EPOCH = 100  # the schedule's step resolution; the preview shows each epoch's first step
COLUMNS = ("as stored", "model input")


def parse_epochs(text: str, total: int) -> list[int]:
    """``--epoch`` as a list of 0-based epochs, each inside the run's ``total`` epochs (ConfigError otherwise)."""
    try:
        epochs = [int(e) for e in str(text).split(",") if e.strip()]
    except ValueError:
        raise ConfigError(f"--epoch takes 0-based epoch numbers, comma-separated (e.g. 0,3,5); got {text!r}",
                          ("epoch",)) from None
    if not epochs:
        raise ConfigError("--epoch names no epoch", ("epoch",))
    for e in epochs:
        if not 0 <= e < total:
            raise ConfigError(f"--epoch {e} is outside the run's {total} epochs (0..{total - 1}); the schedule is laid "
                              f"out over --epochs, so give the run's length there", ("epoch", "epochs"))
    return epochs


def knobs_label(epoch: int, k) -> str:
    return (f"epoch {epoch}\n{k.image_size}px lp={k.lowpass_size or '-'}\n"
            f"RandAug m={k.randaug_magnitude:g} n={k.randaug_num_ops}\nerase={k.erase_ratio:g}")


def model_view_rows(source: str, cfg, epochs: list[int], n: int):
    """Per epoch: (knobs label, [as stored, model input] x n) from the first batch of a training loader of
    ``cfg`` (a TrainConfig) at that epoch, on the CPU. Returns (rows, knobs per epoch)."""
    from vitdata.loader.loader import create_loader

    schedule = build_schedule(cfg, STEPS_PER_EPOCH)
    lcfg = loader_config(cfg, source, source, 0, 1, "cpu", schedule)
    lcfg = dataclasses.replace(lcfg, batch_size=n, num_workers=0, num_threads=max(1, lcfg.num_threads or 1))
    rows, all_knobs = [], []
    for e in epochs:
        loader = create_loader(lcfg)
        try:
            loader.set_epoch(e)
            batch = next(iter(loader))
        finally:
            loader.close()
        k = batch.knobs
        mean, std = loader.cfg.output.mean, loader.cfg.output.std
        stored = to_uint8(load_images(source, n, k.image_size, mean, std, ids=batch.ids.tolist()), mean, std)
        seen = to_uint8(batch.images, mean, std)
        rows.append((knobs_label(e, k), [img for pair in zip(stored, seen) for img in pair]))
        all_knobs.append(k)
    return rows, all_knobs


def main(argv=None, prog: str = "vitdata preview") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                epilog="Every option of vitdata train is accepted too (--data, --recipe, --curriculum, "
                                       "--size-curriculum, --patch-erasing, --image-size, --epochs, ...).")
    p.add_argument("--epoch", default="0", help="epoch or comma-separated epochs to show (0-based)")
    p.add_argument("--out", default="preview.png", help="output PNG")
    p.add_argument("--images", type=int, default=4, help="images per row")
    own, rest = p.parse_known_args(argv)
    cfg = parse_config(rest, prog)
    epochs = parse_epochs(own.epoch, cfg.epochs)
    if own.images < 1:
        raise ConfigError(f"--images must be >= 1, got {own.images}", ("images",))
    source, _ = resolve_sources(cfg.data, cfg.train, cfg.val, synthetic_samples=cfg.synthetic_samples,
                                require_val=False)
    rows, knobs = model_view_rows(source, cfg, epochs, own.images)
    plot_samples(rows, own.out, [c for _ in range(own.images) for c in COLUMNS])
    for e, k in zip(epochs, knobs):
        print(f"epoch {e}: {k}")
    print(f"wrote {own.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
