"""Make a multi-megapixel ImageFolder from a folder of photos, for the loader and decode benchmarks.

ImageNet's photos are mostly about 500 x 375; the photos users train on also include camera-sized ones (several
megapixels), where the decode is a larger share of a step and the levels store's 1/8 level matters. Each photo
is upscaled (Lanczos) to a long side drawn uniformly from ``--min-long``..``--max-long`` (seeded, in sorted
path order) and saved as JPEG ``--quality``, 4:2:0 (cameras' default). The upscale holds no detail beyond the
source's, but a decoder pays per pixel and per coded block, so the decode cost is that of a JPEG of that size.
The record of a run on it names this script and its arguments (``bench loader --data-note``).

    python benchmarks/make_large_photos.py --src ../shared/data/imagenet-samples --out DIR
"""
import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

EXTENSIONS = (".jpeg", ".jpg", ".png", ".webp")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="ImageFolder root (class folders of photos)")
    p.add_argument("--out", required=True, help="the new ImageFolder root (created)")
    p.add_argument("--min-long", type=int, default=1600)
    p.add_argument("--max-long", type=int, default=3200)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    src = sorted(os.path.join(d, f) for d, _, files in os.walk(a.src) for f in files
                 if f.lower().endswith(EXTENSIONS))
    if not src:
        print(f"no photos under {a.src}", file=sys.stderr)
        return 2
    longs = np.random.default_rng(a.seed).integers(a.min_long, a.max_long + 1, len(src))

    def one(job):
        path, long_side = job
        with Image.open(path) as im:
            im = im.convert("RGB")
            s = long_side / max(im.size)
            out = os.path.join(a.out, os.path.relpath(os.path.splitext(path)[0], a.src) + ".JPEG")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS).save(out, "JPEG", quality=a.quality)

    with ThreadPoolExecutor(a.workers) as pool:
        list(pool.map(one, zip(src, longs)))
    print(f"{len(src)} photos -> {a.out} (long side {a.min_long}-{a.max_long} px, quality {a.quality}, seed {a.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
