"""The built-in default dataset: procedurally drawn classification images as WebDataset shards.

Each class has its own low-frequency signature (a shape -- disc, square, triangle, ring, cross,
bars...; a colour; a layout) and its own high-frequency signature (a texture grating with a class
frequency and orientation inside the shape). Per-sample variation (position, scale, colour jitter,
background, noise level) makes samples differ in difficulty, so a frequency curriculum and a
difficulty oracle both have something real to act on: a low-pass view keeps the shape and colour
and loses the texture, so classes that share shape but differ in texture are hard early.

Generation is deterministic in (seed, sample index): the same call writes byte-identical shards.
Layout written: ``OUT/train/train-NNNNNN.tar``, ``OUT/val/val-NNNNNN.tar`` (``KEY.jpg`` + ``KEY.cls``),
``classes.json`` beside the shards, and ``OUT/dataset.json`` (the parameters) written last.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import time

import numpy as np
from PIL import Image

from vitdata.io import atomic_write

SHAPES = ("disc", "square", "triangle", "ring", "cross", "bars", "diamond", "two_discs")
FORMAT = 1


def class_spec(c: int, num_classes: int) -> dict:
    """What defines class ``c``: shape, hue, texture frequency (cycles per image) and angle.

    Classes pair up: 2k and 2k+1 share the shape (for k < len(SHAPES)) and differ in texture
    frequency and hue, so telling them apart needs high frequencies."""
    rng = np.random.default_rng(1000 + c)
    shape = SHAPES[(c // 2) % len(SHAPES)]
    hue = ((c // 2) * 0.37 + (c % 2) * 0.12) % 1.0
    freq = 3.0 + 9.0 * (c % 2) + rng.uniform(0, 2)
    angle = (c * 47.0) % 180.0
    return {"shape": shape, "hue": hue, "freq": freq, "angle": angle}


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def _mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, rot: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(rot), np.sin(rot)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape == "disc":
        return u * u + v * v <= r * r
    if shape == "square":
        return (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
    if shape == "triangle":
        return (v <= r * 0.7) & (v >= -r + 1.7 * np.abs(u))
    if shape == "ring":
        d = u * u + v * v
        return (d <= r * r) & (d >= (0.55 * r) ** 2)
    if shape == "cross":
        return ((np.abs(u) <= r * 0.3) & (np.abs(v) <= r)) | ((np.abs(v) <= r * 0.3) & (np.abs(u) <= r))
    if shape == "bars":
        return (np.abs(v) <= r) & (np.abs(u) <= r) & (np.mod(u + r, r * 0.66) < r * 0.33)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    if shape == "two_discs":
        return ((u - 0.5 * r) ** 2 + v * v <= (0.5 * r) ** 2) | ((u + 0.5 * r) ** 2 + v * v <= (0.5 * r) ** 2)
    raise ValueError(shape)


def draw(index: int, label: int, num_classes: int, size: int, seed: int) -> np.ndarray:
    """(size, size, 3) uint8 image of sample ``index`` of class ``label``; deterministic in (seed, index)."""
    spec = class_spec(label, num_classes)
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # background: a smooth random gradient with a random dull colour
    bg0, bg1 = rng.uniform(0.15, 0.6, 3).astype(np.float32), rng.uniform(0.15, 0.6, 3).astype(np.float32)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1) + 1) / 2
    img = bg0 * (1 - t[..., None]) + bg1 * t[..., None]
    # the object: class shape at a random place, scale and rotation
    r = rng.uniform(0.22, 0.36)
    cy, cx = rng.uniform(r, 1 - r), rng.uniform(r, 1 - r)
    m = _mask(spec["shape"], yy, xx, cy, cx, r, rng.uniform(0, np.pi / 6))
    colour = _hsv_to_rgb((spec["hue"] + rng.normal(0, 0.03)) % 1.0, rng.uniform(0.6, 0.9), rng.uniform(0.7, 0.95))
    th = np.deg2rad(spec["angle"] + rng.normal(0, 8))
    grating = 0.5 + 0.5 * np.sin(2 * np.pi * spec["freq"] * (xx * np.cos(th) + yy * np.sin(th)) + rng.uniform(0, 2 * np.pi))
    contrast = rng.uniform(0.25, 0.6)
    obj = colour * (1 - contrast + contrast * grating[..., None])
    img = np.where(m[..., None], obj, img)
    # per-sample difficulty: noise level varies across samples
    noise = rng.uniform(0.0, 0.12)
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _write_split(directory: str, prefix: str, ids: range, labels: np.ndarray, num_classes: int, size: int,
                 seed: int, per_shard: int, quality: int, classes: list[str]) -> None:
    os.makedirs(directory, exist_ok=True)
    ids = list(ids)
    for s, start in enumerate(range(0, len(ids), per_shard)):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for i in ids[start:start + per_shard]:
                y = int(labels[i])
                jpg = io.BytesIO()
                Image.fromarray(draw(i, y, num_classes, size, seed)).save(jpg, format="JPEG", quality=quality)
                for name, data in ((f"{prefix}_{i:07d}.jpg", jpg.getvalue()), (f"{prefix}_{i:07d}.cls", str(y).encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tf.addfile(info, io.BytesIO(data))
        atomic_write(os.path.join(directory, f"{prefix}-{s:06d}.tar"), buf.getvalue())
    atomic_write(os.path.join(directory, "classes.json"), json.dumps(classes).encode())


def generate(out_dir: str, *, num_samples: int = 10000, num_classes: int = 10, size: int = 64, seed: int = 0,
             val_fraction: float = 0.1, per_shard: int = 2000, quality: int = 92) -> dict:
    """Write the dataset under ``out_dir`` (``train/`` and ``val/``) unless an identical one is there.

    Returns the parameters (also in ``out_dir/dataset.json``). Labels are balanced and shuffled."""
    params = {"format": FORMAT, "num_samples": num_samples, "num_classes": num_classes, "size": size,
              "seed": seed, "val_fraction": val_fraction, "per_shard": per_shard, "quality": quality}
    meta = os.path.join(out_dir, "dataset.json")
    if os.path.exists(meta):
        with open(meta) as f:
            if json.load(f) == params:
                return params
    if not 2 <= num_classes <= 256 or size < 16 or num_samples < num_classes:
        raise ValueError("need 2 <= num_classes <= 256, size >= 16 and num_samples >= num_classes")
    labels = np.random.default_rng(seed).permutation(np.arange(num_samples) % num_classes)
    n_val = int(round(num_samples * val_fraction))
    classes = [f"{c:02d}_{class_spec(c, num_classes)['shape']}" for c in range(num_classes)]
    _write_split(os.path.join(out_dir, "train"), "train", range(0, num_samples - n_val), labels, num_classes, size,
                 seed, per_shard, quality, classes)
    if n_val:
        _write_split(os.path.join(out_dir, "val"), "val", range(num_samples - n_val, num_samples), labels,
                     num_classes, size, seed, per_shard, quality, classes)
    atomic_write(meta, json.dumps(params).encode())
    return params


def default_root(**kw) -> str:
    """Where ``vitdata train`` keeps the default dataset: the vitdata cache, keyed by the parameters."""
    from vitdata.io import cache_dir
    tag = "-".join(f"{k}{v}" for k, v in sorted(kw.items())) or "default"
    return os.path.join(cache_dir(), "synthetic", tag)


def main(argv=None, prog="python -m vitdata.data.synthetic") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Write the built-in synthetic dataset as WebDataset shards.")
    p.add_argument("out", help="output directory (train/ and val/ are created inside)")
    p.add_argument("--num-samples", type=int, default=10000)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    generate(a.out, num_samples=a.num_samples, num_classes=a.num_classes, size=a.size, seed=a.seed,
             val_fraction=a.val_fraction)
    print(f"wrote {a.num_samples} images to {a.out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
