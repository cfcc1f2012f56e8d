"""Run a loader and record what it delivered, for the tests that compare two runs step by step
(determinism, shutdown, source workers): ids, augmentation magnitudes and an image digest per batch."""
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


def assert_source_workers_match(data, **kw):
    """One epoch of a DALI loader (``LoaderConfig(data, **kw)``, no RandAugment or flip) with the source in the
    pipeline thread and in 2 worker processes: the same ids and the same pixels, step by step."""
    runs = {}
    for workers in (0, 2):
        ld = create_loader(LoaderConfig(data=data, backend="dali", num_workers=workers, num_threads=2, seed=5,
                                        augment=AugmentConfig(randaug=False, hflip=0.0, patch_size=1), **kw))
        try:
            ld.set_epoch(0)
            runs[workers] = [(b.images.clone(), b.ids.clone()) for b in ld]
        finally:
            ld.close()
    assert len(runs[0]) == len(runs[2])
    for (a, ia), (b, ib) in zip(runs[0], runs[2]):
        assert torch.equal(ia, ib) and torch.equal(a, b)
