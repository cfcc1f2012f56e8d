"""Each policy does what it claims, on a simulated trainer with known per-sample difficulty and a real Sampler."""
import math

import numpy as np
import pytest
import torch

from vitdata.oracle.difficulty import POLICIES, DifficultyOracle, Policy, PruneEasyPolicy, register_policy
from vitdata.data.sampler import EpochPlan

N = 400


def two_groups(n=N, hard_share=0.25, p_hard=0.15, p_easy=0.95):
    """First hard_share*n samples hard (p_y = p_hard), the rest easy."""
    p = np.full(n, p_easy, dtype=np.float32)
    p[: int(hard_share * n)] = p_hard
    return p


def test_uniform_returns_an_empty_plan(simulate):
    o = DifficultyOracle(N, "uniform", device="cpu")
    sim = simulate(o, two_groups()).run(2)
    plan = o.plan
    assert isinstance(plan, EpochPlan) and plan.mode == "uniform"
    assert all(f is None for f in (plan.weights, plan.kept, plan.aug_magnitude, plan.erase_ratio, plan.loss_weight))
    assert (sim.reads[1] == 1).all()


def test_weighted_reads_hard_samples_more_but_every_sample_within_k_epochs(simulate):
    floor, delta = 0.5, 0.01
    k = math.ceil(math.log(N / delta) / -math.log(1 - floor))       # the documented bound: 16 here
    o = DifficultyOracle(N, "weighted", device="cpu", floor=floor)
    p = two_groups()
    sim = simulate(o, p, seed=3).run(k + 1)
    reads = np.stack(sim.reads[1:])                                  # epochs driven by weighted plans
    hard = p < 0.5
    assert reads[:, hard].mean() > 2.0 * reads[:, ~hard].mean()     # ~3.7x with these difficulties
    assert (reads.sum(0) >= 1).all()                                 # every sample read within k epochs
    for plan in sim.plans[1:]:
        prob = plan.weights / plan.weights.sum()
        assert prob.min() >= floor / N * (1 - 1e-9)


def test_weighted_with_floor_one_reads_every_sample_once(simulate):
    o = DifficultyOracle(N, "weighted", device="cpu", floor=1.0)
    sim = simulate(o, two_groups()).run(3)
    assert all((r == 1).all() for r in sim.reads)


def test_prune_easy_keeps_the_loss_weighted_sum_unbiased():
    o = DifficultyOracle(N, "prune-easy", device="cpu", ratio=0.6)
    gen = torch.Generator().manual_seed(0)
    losses = torch.rand(N, generator=gen) ** 2 * 3.0                 # skewed: many well-learned samples
    o.report(torch.arange(N), losses)
    o.end_epoch(0)
    table = o._host_table()
    policy = o.policy
    full = float(losses.double().sum())
    totals = []
    for seed in range(2000):
        plan = policy.plan(table, 1, {}, np.random.default_rng(seed))
        kept = plan.kept
        totals.append(float((plan.loss_weight[kept].astype(np.float64) * table.last_loss[kept]).sum()))
    totals = np.asarray(totals)
    well = policy.well_learned(table)
    assert 0.3 < well.mean() < 0.8
    se = totals.std() / math.sqrt(len(totals))
    assert abs(totals.mean() - full) < 4 * se
    assert abs(totals.mean() - full) / full < 0.005
    assert totals.std() > 0                                          # it did prune


def test_prune_easy_through_the_sampler_reads_each_kept_sample_once_and_anneals(simulate):
    epochs = 8
    o = DifficultyOracle(N, "prune-easy", device="cpu", ratio=0.5, anneal=0.25, epochs=epochs)
    p = np.linspace(0.05, 0.99, N).astype(np.float32)
    sim = simulate(o, p, batch_size=10).run(epochs)
    for e in range(1, 6):
        plan = sim.plans[e]
        assert plan.mode == "kept" and not plan.kept.all()
        assert (sim.reads[e][~plan.kept] == 0).all()
        assert sim.reads[e].max() == 1
        pruned = ~plan.kept
        assert p[pruned].min() > 0.3                                  # only well-learned samples pruned
        assert set(np.unique(plan.loss_weight)) == {1.0, 2.0}
        assert (plan.loss_weight[p < 0.3] == 1.0).all()
    for e in (6, 7):                                                  # final quarter: full data, weight 1
        assert sim.plans[e].mode == "uniform" and sim.plans[e].loss_weight is None
        assert (sim.reads[e] == 1).all()


def test_data_centric_raises_augmentation_for_easy_samples_only(simulate):
    o = DifficultyOracle(N, "data-centric", device="cpu", target_easy=0.3, max_erase=0.3, max_magnitude=5.0)
    p = two_groups(hard_share=0.3, p_hard=0.2)
    p[120:200] = 0.6                                                  # a moderate group
    sim = simulate(o, p, seed=1, aug_effect=0.01).run(5)
    boosted = [e for e, plan in enumerate(sim.plans) if plan is not None and plan.aug_magnitude is not None]
    assert boosted, "no epoch with a per-sample boost"
    for e in boosted:
        plan = sim.plans[e]
        easy = p >= 0.8
        assert (plan.aug_magnitude[~easy] == 0).all() and (plan.erase_ratio[~easy] == 0).all()
        assert (plan.aug_magnitude[easy] > 0).all() and (plan.erase_ratio[easy] > 0).all()
        assert plan.erase_ratio.max() <= 0.3 + 1e-7 and plan.aug_magnitude.max() <= 5.0 + 1e-6


def test_data_centric_controller_moves_strength_toward_the_target_share():
    policy = POLICIES["data-centric"](target_easy=0.5, gain=0.5)
    o = DifficultyOracle(4, policy, device="cpu")
    o.report(torch.arange(4), torch.zeros(4), p_true=torch.tensor([0.9, 0.9, 0.9, 0.1]))
    o.end_epoch(0)                                                    # DDP_e .75 > DDP_h .25 -> growth
    assert o.last_metrics["period"] == "growth"
    assert policy.strength == pytest.approx(0.5 * (0.75 - 0.5))
    assert o.plan.aug_magnitude.tolist() == pytest.approx([0.625, 0.625, 0.625, 0.0])
    o.report(torch.arange(4), torch.zeros(4), p_true=torch.tensor([0.9, 0.5, 0.5, 0.1]))
    o.end_epoch(1)                                                    # DDP_e .25 < target: strength falls
    assert policy.strength == pytest.approx(0.125 - 0.125)
    assert o.plan.aug_magnitude is None                               # nothing boosted at strength 0


def test_the_data_centric_erase_boost_acts_on_top_of_the_recipes_ratio():
    # docs/methods.md §1: the recipe erases 0.3 of every sample's patches and the policy's boost is at most
    # 0.3 * s; the loader took max(0.3, boost) = 0.3, so the boost never acted. It is now added.
    from vitdata.oracle.policies import MAX_ERASE_RATIO, boosted_erase_ratio
    policy = POLICIES["data-centric"](target_easy=0.5, gain=1.0, max_erase=0.3)
    o = DifficultyOracle(4, policy, device="cpu")
    o.report(torch.arange(4), torch.zeros(4), p_true=torch.tensor([0.9, 0.9, 0.9, 0.1]))
    plan = o.end_epoch(0)                                             # growth, strength 0.25
    ids = np.array([0, 1, 3])
    erase = boosted_erase_ratio(0.3, plan.erase_ratio, ids)
    assert erase.tolist() == pytest.approx([0.3 + 0.25 * 0.3, 0.3 + 0.25 * 0.3, 0.3])
    assert np.maximum(np.full(3, 0.3, np.float32), plan.erase_ratio[ids]).tolist() == pytest.approx([0.3] * 3)
    assert boosted_erase_ratio(0.3, None, ids).tolist() == pytest.approx([0.3] * 3)
    assert boosted_erase_ratio(0.8, np.full(4, 0.3, np.float32), ids).max() == pytest.approx(MAX_ERASE_RATIO)


def test_data_centric_stays_off_during_formation():
    o = DifficultyOracle(4, "data-centric", device="cpu", target_easy=0.0)
    o.report(torch.arange(4), torch.zeros(4), p_true=torch.tensor([0.9, 0.1, 0.1, 0.1]))
    plan = o.end_epoch(0)
    assert o.last_metrics["period"] == "formation" and plan.aug_magnitude is None


def test_a_registered_policy_is_selectable_by_name():
    @register_policy
    class EveryOther(Policy):
        name = "test-every-other"

        def plan(self, table, epoch, metrics, rng):
            return EpochPlan(kept=(np.arange(len(table)) % 2 == epoch % 2))

    try:
        o = DifficultyOracle(6, "test-every-other", device="cpu")
        plan = o.end_epoch(0)
        assert plan.kept.tolist() == [False, True] * 3
    finally:
        POLICIES.pop("test-every-other")


def test_prune_easy_by_p_y_prunes_only_confident_samples():
    policy = PruneEasyPolicy(ratio=0.99, criterion="p_y")
    o = DifficultyOracle(4, policy, device="cpu")
    o.report(torch.arange(4), torch.ones(4), p_true=torch.tensor([0.95, 0.85, 0.5, 0.1]))
    plan = o.end_epoch(0)
    assert plan.kept[2:].all()


def test_weighted_caps_a_few_very_hard_samples_and_keeps_the_floor():
    o = DifficultyOracle(1000, "weighted", device="cpu", floor=0.5, cap=5.0)
    p = torch.full((1000,), 0.999)
    p[:3] = 0.0                                           # three hopeless samples among easy ones
    o.report(torch.arange(1000), torch.zeros(1000), p_true=p)
    w = o.end_epoch(0).weights
    assert w.sum() == pytest.approx(1.0)
    assert w.max() <= 5.0 / 1000 * (1 + 1e-9) and w.min() >= 0.5 / 1000
    assert (w[:3] == w.max()).all()
    uncapped = DifficultyOracle(1000, "weighted", device="cpu", floor=0.5, cap=None)
    uncapped.report(torch.arange(1000), torch.zeros(1000), p_true=p)
    assert uncapped.end_epoch(0).weights.max() > 100 / 1000


def test_weighted_gives_a_skipped_id_the_floor_weight_until_an_epoch_reports_it():
    """A bad file (skipped, never reported) gets floor / N, not the never-seen prior; it stays flagged while
    it is not reported, and an epoch that reports it (a repaired file) returns it to normal weighting."""
    n, floor = 100, 0.5
    o = DifficultyOracle(n, "weighted", device="cpu", floor=floor)
    ids = torch.arange(n)
    losses = torch.full((n,), 0.7)
    keep = (ids != 7) & (ids != 8)                 # 7: skipped by the loader; 8: simply not drawn
    o.report(ids[keep], losses[keep])
    o.mark_skipped([7])
    w = o.end_epoch(0).weights
    assert o.last_metrics["n_skipped"] == 1 and o.last_metrics["n_reports"] == n - 2
    assert w[7] * n == pytest.approx(floor) and w[7] < w[keep].mean() < w[8]
    o.report(ids[keep], losses[keep])              # epoch 1: 7 not drawn, so not flagged again
    w = o.end_epoch(1).weights
    assert w[7] * n == pytest.approx(floor) and o.last_metrics["n_skipped"] == 0
    o.report(ids, losses)                          # epoch 2: 7 read and reported
    w = o.end_epoch(2).weights
    assert w[7] == pytest.approx(w[keep].mean())
    assert o.table_arrays()["seen"][7] == 1


def test_skip_flags_are_not_reports_and_survive_a_state_round_trip():
    o = DifficultyOracle(50, "weighted", device="cpu")
    o.report(torch.arange(1, 50), torch.ones(49))
    before = o.table_arrays()
    o.mark_skipped(torch.tensor([0, 0, -1]))       # repeated and negative ids are fine
    o.end_epoch(0)
    after = o.table_arrays()
    assert after["seen"][0] == 0 and all(np.array_equal(after[k][0], before[k][0]) for k in after)
    o.mark_skipped([3])                            # pending at the time of the state
    state = o.state_dict()
    b = DifficultyOracle(50, "weighted", device="cpu")
    b.load_state_dict(state)
    assert b.end_epoch(1).digest() == o.end_epoch(1).digest()
    old = {k: v for k, v in state.items() if k not in ("skipped", "skip_pending")}   # written before flags
    c = DifficultyOracle(50, "weighted", device="cpu")
    c.load_state_dict(old)
    assert not c._skip_flag.any()
    with pytest.raises(ValueError, match="out of range"):
        o.mark_skipped([50])


@pytest.mark.parametrize("epochs, last_pruned", [(6, 4), (8, 6), (10, 7), (12, 9), (300, 261)])
def test_prune_easy_prunes_epoch_e_only_while_e_plus_1_is_within_infobatchs_0_875_of_the_run(epochs, last_pruned):
    # InfoBatch's released IBSampler: reset() draws epoch e with its counter at e + 1 (one reset at
    # construction) and prunes while counter <= num_epochs * 0.875. 6 epochs: 0-4 pruned, 5 full; before,
    # vitdata compared e >= 0.875 * epochs and pruned every epoch of a 6-epoch run.
    policy = PruneEasyPolicy(epochs=epochs)
    annealed = [e for e in range(epochs) if policy.annealed(e)]
    assert annealed == list(range(last_pruned + 1, epochs))
    assert annealed, "every run ends with at least one full-data epoch"
