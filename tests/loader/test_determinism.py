"""A loader's sequence of (ids, augmentation, pixels) depends on (seed, epoch, rank) only: not on the
worker count across a resume (docs/reliability.md B5), the number of threads or the construction (B7), how
fast the consumer is (B8); each rank's ids are the documented per-epoch assignment (H3).

Figures are printed; run with ``pytest -s`` to see them."""
import json
import time

import numpy as np
import pytest

from vitdata import create_loader
from vitdata.data import selfid
from vitdata.loader.config import AugmentConfig, DistributedConfig
from loader_runs import cfg as _cfg, record as _record, run as _run, same as _same

# Repeated loader constructions with worker pools: deselected by `make test-quick`.
pytestmark = pytest.mark.heavy

# The whole image, unaugmented: pixels identify the sample.
FULL_VIEW = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix") / "train"
    selfid.write_imagefolder(str(root), 96, num_classes=4, size=16)
    return str(root)


# -- B5 -------------------------------------------------------------------------------------------


def _resume_tail(data, backend, before, after, stop=5):
    first = create_loader(_cfg(data, backend=backend, num_workers=before))
    it = iter(first)
    for _ in range(stop):
        next(it)
    state = json.loads(json.dumps(first.state_dict()))
    del it
    first.close()
    second = create_loader(_cfg(data, backend=backend, num_workers=after))
    second.load_state_dict(state)
    tail = _record(second)
    second.close()
    return tail


@pytest.mark.parametrize("backend,before,after", [("torch", 2, 0), ("torch", 0, 2), ("dali", 2, 1), ("dali", 1, 2)])
def test_changing_the_worker_count_across_a_mid_epoch_resume_gives_the_identical_tail(data, backend, before, after):
    """docs/reliability.md B5 (worker count across a resume).

    torch: DataLoader workers (0 = in process); dali: parallel external-source workers (at least 1)."""
    t = time.perf_counter()
    ref = _run(_cfg(data, backend=backend, num_workers=0 if backend == "torch" else 1))
    tail = _resume_tail(data, backend, before, after)
    assert len(tail) == len(ref) - 5
    _same(tail, ref[5:])
    print(f"\nB5 {backend} workers {before}->{after}: {len(tail)} tail steps identical (ids, magnitudes, pixels), "
          f"{time.perf_counter() - t:.1f} s")


# -- B7 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_the_same_seed_epoch_and_rank_give_identical_ids_params_and_pixels_across_constructions_and_threads(
        data, backend):
    """docs/reliability.md B7 (determinism)."""
    t = time.perf_counter()
    kw = dict(backend=backend, num_workers=1 if backend == "dali" else 0,
              distributed=DistributedConfig(rank=1, world_size=2), seed=11)
    runs = [_run(_cfg(data, num_threads=th, **kw), epoch=1) for th in (1, 2, 1)]
    runs.append(_run(_cfg(data, num_threads=2, **kw), epoch=1))
    ids_equal = all([x[0] for x in r] == [x[0] for x in runs[0]] for r in runs)
    mags_equal = all([x[1] for x in r] == [x[1] for x in runs[0]] for r in runs)
    diffs = [max(float((a[3] - b[3]).abs().max()) for a, b in zip(r, runs[0])) for r in runs[1:]]
    print(f"\nB7 {backend}: 4 constructions (threads 1,2,1,2), ids equal {ids_equal}, magnitudes equal {mags_equal}, "
          f"max |pixel diff| vs run 0 (normalised units): {diffs}; {time.perf_counter() - t:.1f} s")
    assert ids_equal and mags_equal
    assert diffs == [0.0, 0.0, 0.0]

    other = create_loader(_cfg(data, **dict(kw, seed=12)))
    mine = create_loader(_cfg(data, **kw))
    a, b = other.sampler.epoch_ids(1).ravel(), mine.sampler.epoch_ids(1).ravel()
    delivered = np.concatenate([np.asarray(x[0]) for x in runs[0]])
    other.close()
    mine.close()
    assert np.array_equal(delivered, b)
    overlap = float((a == b).mean())
    print(f"B7 {backend}: seed 11 vs 12, position-wise id overlap {overlap:.3%} of {a.size}")
    assert overlap < 0.05


# -- B8 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_a_consumer_sleeping_0_2_s_per_step_sees_the_same_sequence_as_one_that_does_no_work(data, backend):
    """docs/reliability.md B8 (timing independence)."""
    cfg = _cfg(data, backend=backend, num_workers=2, prefetch=2)
    t = time.perf_counter()
    fast = _run(cfg, steps=4)
    t1 = time.perf_counter()
    slow = _run(cfg, steps=4, sleep=0.2)
    t2 = time.perf_counter()
    _same(slow, fast)
    print(f"\nB8 {backend}: 4 steps identical (ids, magnitudes, pixels); no-work run {t1 - t:.2f} s, "
          f"sleeping run {t2 - t1:.2f} s")


# -- H3 -------------------------------------------------------------------------------------------


def _documented_rank_ids(n, batch, seed, epoch, rank, world):
    """The module doc of vitdata/sampler.py, re-implemented: a PCG64 permutation seeded from (order tag,
    seed, epoch), cut into global steps of world*batch, rank r takes columns [r*batch, (r+1)*batch)."""
    from vitdata.data.sampler import _ORDER_TAG

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_ORDER_TAG, seed, epoch])))
    order = rng.permutation(n)
    g = world * batch
    steps = n // g
    return order[: steps * g].reshape(steps, g)[:, rank * batch:(rank + 1) * batch]


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_each_ranks_ids_for_epochs_0_to_2_equal_the_documented_assignment_from_seed_and_epoch(data, backend):
    """docs/reliability.md H3 (shard rotation)."""
    t = time.perf_counter()
    checked = 0
    for world, batch in ((2, 8), (3, 5)):
        for rank in range(world):
            ld = create_loader(_cfg(data, backend=backend, num_workers=1 if backend == "dali" else 0, seed=21,
                                    batch_size=batch, augment=FULL_VIEW,
                                    distributed=DistributedConfig(rank=rank, world_size=world)))
            for epoch in range(3):
                ld.set_epoch(epoch)
                got = np.array([b.ids.tolist() for b in ld])
                want = _documented_rank_ids(96, batch, 21, epoch, rank, world)
                assert np.array_equal(got, want), (world, rank, epoch)
                checked += got.size
            ld.close()
    print(f"\nH3 {backend}: {checked} delivered ids over worlds 2 and 3, epochs 0-2 equal the documented "
          f"assignment; {time.perf_counter() - t:.1f} s")
