"""Run a loader and record what it delivered, for the tests that compare two runs step by step
(determinism, shutdown): ids, augmentation magnitudes and an image digest per batch."""
import hashlib
import time

import torch

from vitdata import LoaderConfig, create_loader
from vitdata.loader.config import AugmentConfig

AUG = AugmentConfig(randaug_magnitude=7.0)


def cfg(data, **kw):
    kw.setdefault("batch_size", 8)
    kw.setdefault("image_size", 16)
    kw.setdefault("augment", AUG)
    return LoaderConfig(data=data, **kw)


def digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.float().cpu().numpy().tobytes()).hexdigest()[:16]


def record(batches):
    """[(ids, aug magnitudes, image digest, images)] of an iterable of batches."""
    return [(b.ids.tolist(), b.aug_magnitude.tolist(), digest(b.images), b.images.float().cpu().clone())
            for b in batches]


def run(cfg, epoch=0, steps=None, sleep=0.0):
    ld = create_loader(cfg)
    ld.set_epoch(epoch)
    out = []
    for b in ld:
        out.extend(record([b]))
        if sleep:
            time.sleep(sleep)
        if steps is not None and len(out) >= steps:
            break
    ld.close()
    return out


def same(a, b, pixels=True):
    assert [x[0] for x in a] == [x[0] for x in b]
    assert [x[1] for x in a] == [x[1] for x in b]
    if pixels:
        assert [x[2] for x in a] == [x[2] for x in b]
