"""Skipped ids and the oracle: a sample skipped as bad is never reported to the oracle and its table row
stays unchanged (docs/reliability.md C4), and under the weighted policy it is drawn no more often than an
average sample: the loader flags it, so its weight is the policy's floor, not the never-seen prior.

Figures are printed; run with ``pytest -s`` to see them."""
import numpy as np
import pytest

from vitdata import create_loader
from .conftest import skip_corpus

# Several epochs of real loaders: deselected by `make test-quick`.
pytestmark = pytest.mark.heavy


def test_skipped_ids_are_never_reported_to_the_oracle_and_their_table_rows_stay_unchanged(tmp_path_factory):
    """docs/reliability.md C4 (skipped ids and the oracle)."""
    from vitdata.oracle.difficulty import DifficultyOracle

    cfg, n, bad = skip_corpus(tmp_path_factory, "c4")
    assert len(bad) == 2
    oracle = DifficultyOracle(n, "weighted", device="cpu", seed=2, floor=0.5)
    before = {k: v[bad].copy() for k, v in oracle.table_arrays().items()}
    ld = create_loader(cfg, oracle=oracle)
    reported, skipped, probs = set(), [], []
    for epoch in range(3):
        ld.set_epoch(epoch)
        if ld.sampler.plan is not None:
            w = ld.sampler.plan.weights
            probs.append([round(float(w[i] / w.sum() * n), 3) for i in bad])
        for b in ld:
            reported.update(b.ids.tolist())
            ld.report(b.ids, 0.1 + (b.ids.float() % 5) / 5)
        skipped.append(sorted({d["id"] for d in ld.skipped(epoch)}))
    ld.set_epoch(3)
    after = {k: v[bad] for k, v in oracle.table_arrays().items()}
    ld.close()
    assert not reported & set(bad)
    assert any(s for s in skipped) and all(set(s) <= set(bad) for s in skipped)
    for k in before:
        assert np.array_equal(before[k], after[k]), k
    print(f"\nC4: bad ids {bad}; skipped per epoch {skipped}; never reported; table rows unchanged over 3 epochs. "
          f"Their plan probability x N (skip-flagged: the floor weight) per epoch: {probs}")


def test_a_permanently_bad_sample_is_not_drawn_more_often_than_an_average_sample_under_the_weighted_policy(
        tmp_path_factory):
    """A real loader (torch backend) with a weighted oracle over 62 good samples and 2 bad files, 6 epochs.
    The loader flags each epoch's skipped ids (``oracle.mark_skipped``, not a loss report): from the first
    plan that knows they were skipped, each bad id's planned draws are at most those of an average id
    (D / N = 1 per epoch), and its probability is the floor, not the never-seen prior. C4 still holds:
    never reported, table rows unchanged."""
    from vitdata.oracle.difficulty import DifficultyOracle

    cfg, n, bad = skip_corpus(tmp_path_factory, "policy")
    floor = 0.5
    oracle = DifficultyOracle(n, "weighted", device="cpu", seed=2, floor=floor)
    before = {k: v[bad].copy() for k, v in oracle.table_arrays().items()}
    ld = create_loader(cfg, oracle=oracle)
    draws, probs, reported = [], [], set()
    for epoch in range(6):
        ld.set_epoch(epoch)
        ids = ld.sampler.epoch_ids(epoch).ravel()
        draws.append(np.bincount(ids, minlength=n))
        if ld.sampler.plan is not None:
            w = ld.sampler.plan.weights
            probs.append([round(float(w[i] / w.sum() * n), 3) for i in bad])
        for b in ld:
            reported.update(b.ids.tolist())
            ld.report(b.ids, 0.1 + (b.ids.float() % 5) / 5)
    ld.set_epoch(6)
    after = {k: v[bad] for k, v in oracle.table_arrays().items()}
    ld.close()
    draws = np.stack(draws)
    avg = draws[1:].sum(1).mean() / n                       # planned draws of an average id per epoch
    assert not reported & set(bad)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(p <= floor * 1.01 for row in probs for p in row)
    assert (draws[1:, bad].mean(0) <= avg).all() and (draws[1:, bad] <= 1).all()
    print(f"\nWeighted policy, skipped ids: bad ids {bad}; plan probability x N per epoch {probs} (floor {floor}); "
          f"planned draws per epoch, bad ids {draws[1:, bad].T.tolist()}, average id {avg:.2f}; never reported, "
          f"table rows unchanged")
