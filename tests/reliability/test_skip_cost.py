"""What a skipped sample costs: well under 5 ms beyond its failed read and no sleep on the skip path, and
1 % bad samples keep 97 % of the all-good throughput (docs/reliability.md A3).

Figures are printed; run with ``pytest -s`` to see them. The throughput ratio is too noisy for the shared
2-core CI machine, so it runs as a ``slow`` test beside a CI test of the robust criterion."""
import shutil
import time

import numpy as np
import pytest

from vitdata import LoaderConfig, create_loader
from vitdata.data import selfid
from vitdata.loader.batch import BatchAssembler
from vitdata.data.checks import check_sample, resolve_sample
import badinputs
from .conftest import FULL_VIEW

# 2 epochs of 2,000 samples, twice: deselected by `make test-quick`.
pytestmark = pytest.mark.heavy

CONTENT_KINDS = (1, 2, 3, 4, 5, 7, 8, 15, 19, 20, 23)


def _median(xs):
    return float(np.median(np.asarray(xs, dtype=np.float64)))


A3_SAMPLES, A3_BAD, A3_BATCH = 2000, 20, 40       # 1 % bad; 50 full steps, so every bad id is read each epoch


@pytest.fixture(scope="module")
def a3_data(tmp_path_factory):
    """(all-good root, mixed root, paths made bad): the same 2,000 16 px JPEGs, 20 of them (1 %, chosen at
    random) replaced in the mixed copy by bad files of the content kinds in turn."""
    base = tmp_path_factory.mktemp("a3")
    good, mixed = base / "good", base / "mixed"
    selfid.write_imagefolder(str(good), A3_SAMPLES, num_classes=4, size=16)
    shutil.copytree(good, mixed)
    files = sorted(str(p) for p in mixed.rglob("*.jpg"))
    pick = np.random.default_rng(3).choice(len(files), A3_BAD, replace=False)
    payload = {k: badinputs.make_bytes(k) for k in CONTENT_KINDS}
    bad = []
    for j, p in enumerate(sorted(pick)):
        with open(files[p], "wb") as f:
            f.write(payload[CONTENT_KINDS[j % len(CONTENT_KINDS)]])
        bad.append(files[p])
    return str(good), str(mixed), set(bad)


def _a3_cfg(data, backend="dali"):
    return LoaderConfig(data=data, batch_size=A3_BATCH, image_size=16, backend=backend, on_error="skip",
                        num_workers=2 if backend == "dali" else 0, augment=FULL_VIEW)


def _a3_run(data, backend="dali"):
    """(samples per second after the first batch, over 2 epochs; skip reports of the 2 epochs)."""
    ld = create_loader(_a3_cfg(data, backend))
    n, t = 0, None
    for epoch in range(2):
        ld.set_epoch(epoch)
        for b in ld:
            if t is None:                  # pipeline construction is not throughput
                t = time.perf_counter()
                continue
            n += len(b.ids)
    dt = time.perf_counter() - t
    reports = [ld.skipped(e) for e in range(2)]
    ld.close()
    return n / dt, reports


def test_a_skipped_sample_costs_well_under_5_ms_beyond_its_failed_read_and_no_sleep(a3_data, monkeypatch):
    """docs/reliability.md A3 (skip cost).

    The robust A3 criterion, in CI. For every bad position of 2 epochs' orders, the skip path
    (``resolve_sample``: the failed check, then the substitute's read) is timed against the failed check
    plus the read of the substitute that a good sample would have cost anyway; the minimum of 5 repeats
    per position removes scheduler noise. The main process's accounting of each skip
    (``BatchAssembler._account``) is timed inside a real 2-epoch DALI run and added. ``time.sleep`` is
    patched to count calls on the skip path: none allowed. The throughput ratio (>= 97 %) is in the ``slow`` test below: on this shared 2-core
    machine two identical runs differ by more than the 3 % it has to resolve."""
    good, mixed, bad_paths = a3_data
    ld = create_loader(_a3_cfg(mixed, "torch"))
    index, reader, mp = ld.index, ld.reader, ld.cfg.max_pixels
    bad_ids = {i for i in range(len(index)) if index.path(i) in bad_paths}
    assert len(bad_ids) == A3_BAD
    sleeps, extra, fails = [], [], []
    with monkeypatch.context() as patch:
        patch.setattr(time, "sleep", lambda s: sleeps.append(s))
        for epoch in range(2):
            ids = ld.sampler.epoch_ids(epoch).reshape(-1)
            for pos in np.flatnonzero(np.isin(ids, list(bad_ids))):
                best = None
                for _ in range(5):
                    t0 = time.perf_counter()
                    sid, status, _ = resolve_sample(reader, index, ids, int(pos), mp)
                    t1 = time.perf_counter()
                    _, reason, _ = check_sample(reader, index, int(ids[pos]), mp)
                    t2 = time.perf_counter()
                    check_sample(reader, index, sid, mp)
                    t3 = time.perf_counter()
                    assert status != 0 and reason is not None and sid not in bad_ids
                    cand = ((t1 - t0) - (t2 - t1) - (t3 - t2), t2 - t1)
                    best = cand if best is None or cand[0] < best[0] else best
                extra.append(best[0])
                fails.append(best[1])
    ld.close()
    assert len(extra) == 2 * A3_BAD and not sleeps

    spent = []
    account = BatchAssembler._account

    def timed(self, *a):
        t = time.perf_counter()
        try:
            return account(self, *a)
        finally:
            spent.append(time.perf_counter() - t)

    with monkeypatch.context() as patch:
        patch.setattr(BatchAssembler, "_account", timed)
        rate_good, _ = _a3_run(good)
        rate_mixed, reports = _a3_run(mixed)
    for rep in reports:
        assert sorted(d["path"] for d in rep) == sorted(bad_paths)       # skipped == injected, each epoch
    per_skip_main = sum(spent) / (2 * A3_BAD)                            # upper bound: all batches' accounting
    worst = max(extra) + per_skip_main
    print(f"\nA3: {A3_BAD} bad of {A3_SAMPLES} (1 %), 2 epochs, skipped == injected in both. Per bad sample: failed "
          f"check median {_median(fails) * 1e6:.0f} us; skip path beyond it and the substitute's read: median "
          f"{_median(extra) * 1e6:.1f} us, max {max(extra) * 1e6:.1f} us; main-process accounting <= "
          f"{per_skip_main * 1e6:.1f} us; sleeps on the skip path: {len(sleeps)}. One interleaved DALI run each "
          f"(information only): all-good {rate_good:.0f}/s, mixed {rate_mixed:.0f}/s, "
          f"ratio {rate_mixed / rate_good:.3f}")
    assert worst < 5e-3


@pytest.mark.slow
def test_one_percent_bad_samples_keep_97_percent_of_the_all_good_throughput(a3_data):
    """docs/reliability.md A3 (skip cost).

    Throughput over 2 epochs (after the first batch) of the 1 %-bad set against the all-good set, DALI
    backend, runs interleaved in one process, median of 3 each. ``slow``: on the shared 2-core CI machine
    two identical runs differ by more than 3 %, so CI checks the per-sample skip cost instead (above)."""
    good, mixed, _ = a3_data
    _a3_run(good)                                          # warm the page cache and the imports
    rates = {"good": [], "mixed": []}
    for _ in range(3):
        rates["good"].append(_a3_run(good)[0])
        rates["mixed"].append(_a3_run(mixed)[0])
    ratio = _median(rates["mixed"]) / _median(rates["good"])
    print(f"\nA3 throughput: all-good {[round(r) for r in rates['good']]}/s, "
          f"1 % bad {[round(r) for r in rates['mixed']]}/s, ratio of medians {ratio:.3f}")
    assert ratio >= 0.97
