"""The sampler's epoch order: coverage per rank, purity, end-of-epoch rule, plans, resume and elastic resume."""
import json

import numpy as np
import pytest

from vitdata.errors import ConfigError, StateError
from vitdata.data.sampler import PAD_ID, EpochEnd, EpochPlan, Sampler, check_resume, resume_batch_size


def _ranks(n, batch, world, **kw):
    return [Sampler(n, batch, rank=r, world_size=world, **kw) for r in range(world)]


@pytest.mark.parametrize("n,batch,world", [(100, 4, 1), (101, 3, 2), (1000, 7, 4), (97, 5, 3)])
def test_each_id_is_read_at_most_once_per_epoch_per_rank(n, batch, world):
    for s in _ranks(n, batch, world, seed=3):
        for epoch in range(3):
            ids = s.epoch_ids(epoch).ravel()
            assert ids.dtype == np.int64
            assert len(np.unique(ids)) == ids.size
            assert ids.min() >= 0 and ids.max() < n


@pytest.mark.parametrize("n,batch,world", [(100, 4, 1), (101, 3, 2), (1000, 7, 4), (97, 5, 3)])
def test_ranks_are_disjoint_and_their_union_is_the_epoch(n, batch, world):
    ranks = _ranks(n, batch, world, seed=1)
    per_rank = [s.epoch_ids(2).ravel() for s in ranks]
    union = np.concatenate(per_rank)
    assert len(np.unique(union)) == union.size  # disjoint
    steps = ranks[0].steps_per_epoch()
    g = world * batch
    assert steps == n // g
    # the union is exactly the kept part of the epoch's global order; the dropped tail is < G ids
    assert sorted(union) == sorted(ranks[0].epoch_order(2)[: steps * g])
    assert n - union.size < g


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("n", [96, 97, 119, 120, 121])
def test_every_rank_runs_the_same_number_of_steps(n, drop_last):
    ranks = _ranks(n, 4, 3, drop_last=drop_last)
    shapes = {s.epoch_ids(0).shape for s in ranks}
    assert len(shapes) == 1
    assert shapes.pop()[0] == ranks[0].steps_per_epoch() == len(ranks[0])


def test_order_is_a_pure_function_of_seed_epoch_rank_world_and_plan():
    a = Sampler(5000, 8, seed=7, rank=1, world_size=3)
    b = Sampler(5000, 8, seed=7, rank=1, world_size=3)
    b.epoch_ids(4)  # a different call history changes nothing
    np.random.seed(123)  # nor does the global RNG
    np.testing.assert_array_equal(a.epoch_ids(5), b.epoch_ids(5))
    np.random.seed(999)
    np.testing.assert_array_equal(a.epoch_ids(5), Sampler(5000, 8, seed=7, rank=1, world_size=3).epoch_ids(5))


def test_the_sampler_leaves_the_global_rng_alone():
    np.random.seed(5)
    expected = np.random.random(3)
    np.random.seed(5)
    s = Sampler(1000, 10)
    s.epoch_ids(0)
    s.set_plan(EpochPlan(weights=np.ones(1000)))
    s.epoch_ids(1)
    np.testing.assert_array_equal(np.random.random(3), expected)


def test_another_seed_or_epoch_gives_a_different_order():
    n = 20000
    base = Sampler(n, 10, seed=0).epoch_order(0)
    assert np.mean(base == Sampler(n, 10, seed=1).epoch_order(0)) < 0.05
    assert np.mean(base == Sampler(n, 10, seed=0).epoch_order(1)) < 0.05


def test_the_global_order_does_not_depend_on_world_size():
    orders = [Sampler(1000, 24 // w, world_size=w, rank=0, seed=2).epoch_order(3) for w in (1, 2, 3, 4)]
    for o in orders[1:]:
        np.testing.assert_array_equal(o, orders[0])


def test_shuffle_off_reads_ids_in_order():
    s = Sampler(20, 5, shuffle=False)
    np.testing.assert_array_equal(s.epoch_ids(0).ravel(), np.arange(20))
    np.testing.assert_array_equal(s.epoch_ids(9).ravel(), np.arange(20))


# -- end of epoch ------------------------------------------------------------------------------------

def test_end_of_epoch_worked_table_from_the_docstring():
    drop = _ranks(10, 2, 2, shuffle=False, drop_last=True)
    pad = _ranks(10, 2, 2, shuffle=False, drop_last=False)
    assert drop[0].epoch_end is EpochEnd.DROP and pad[0].epoch_end is EpochEnd.PAD
    assert drop[0].epoch_ids(0).tolist() == [[0, 1], [4, 5]]
    assert drop[1].epoch_ids(0).tolist() == [[2, 3], [6, 7]]
    assert pad[0].epoch_ids(0).tolist() == [[0, 1], [4, 5], [8, -1]]
    assert pad[1].epoch_ids(0).tolist() == [[2, 3], [6, 7], [9, -1]]


@pytest.mark.parametrize("n,batch,world", [(10, 2, 2), (97, 8, 4), (1, 4, 3), (50, 5, 2), (48, 4, 4), (33, 16, 3)])
def test_eval_mode_reads_every_id_exactly_once_across_ranks_with_bounded_padding(n, batch, world):
    ranks = _ranks(n, batch, world, shuffle=False, drop_last=False)
    per_rank = [s.epoch_ids(0) for s in ranks]
    assert len({a.shape for a in per_rank}) == 1
    flat = np.concatenate([a.ravel() for a in per_rank])
    real = flat[flat != PAD_ID]
    assert sorted(real.tolist()) == list(range(n))
    g = world * batch
    assert flat.size - real.size <= g - 1
    # trimming the trailing slots that are padding on every rank leaves at most world - 1 pads
    last = np.stack([a[-1] for a in per_rank])           # (world, batch)
    used = (last != PAD_ID).any(axis=0).sum()            # slots with a real id on some rank
    assert (last[:, :used] == PAD_ID).sum() <= world - 1


def test_drop_last_refuses_a_dataset_smaller_than_one_global_batch():
    with pytest.raises(ConfigError, match="num_samples") as e:
        Sampler(10, 4, world_size=3)
    assert {"num_samples", "batch_size", "world_size"} <= set(e.value.fields)


def test_bad_arguments_name_their_field():
    for kw, field in [(dict(num_samples=0, batch_size=1), "num_samples"), (dict(num_samples=5, batch_size=0), "batch_size"),
                      (dict(num_samples=5, batch_size=1, seed=-1), "seed"),
                      (dict(num_samples=5, batch_size=1, rank=2, world_size=2), "rank")]:
        with pytest.raises(ConfigError) as e:
            Sampler(**kw)
        assert field in e.value.fields


# -- plans ---------------------------------------------------------------------------------------------

def test_weights_shift_the_sampled_distribution_to_the_expected_counts():
    n = 1000
    rng = np.random.default_rng(0)
    w = rng.gamma(0.5, size=n)
    w[:50] = 0.0
    s = Sampler(n, 10, seed=4)
    s.set_plan(EpochPlan(weights=w, num_draws=5000))
    order = s.epoch_order(0)
    assert order.size == 5000 and s.steps_per_epoch() == 500
    counts = np.bincount(order, minlength=n)
    expected = 5000 * w / w.sum()
    # systematic resampling: every count is the floor or the ceiling of its expectation
    assert np.all((counts == np.floor(expected)) | (counts == np.ceil(expected)))
    assert counts[:50].sum() == 0
    live = expected > 0
    chi2 = np.sum((counts[live] - expected[live]) ** 2 / expected[live])
    assert chi2 < 0.25 * live.sum()  # far below the ~n of multinomial draws
    # shuffled: the repeated ids are spread, not grouped
    assert np.mean(np.diff(order) == 0) < 0.05
    # a different epoch draws a different offset and order, with the same expectation
    assert not np.array_equal(order, s.epoch_order(1))


def test_weights_are_drawn_with_replacement_and_split_evenly_across_ranks():
    n = 300
    w = np.zeros(n)
    w[:10] = 1.0
    ranks = _ranks(n, 5, 2, seed=9)
    for s in ranks:
        s.set_plan(EpochPlan(weights=w))
    ids = np.concatenate([s.epoch_ids(0).ravel() for s in ranks])
    assert ids.size == n and set(ids.tolist()) == set(range(10))
    assert np.all(np.bincount(ids, minlength=10) == 30)


def test_kept_mode_reads_each_kept_id_once_and_nothing_else():
    n = 240
    kept = np.zeros(n, bool)
    kept[::3] = True
    ranks = _ranks(n, 4, 2, seed=5, drop_last=False)
    for s in ranks:
        s.set_plan(EpochPlan(kept=kept))
    flat = np.concatenate([s.epoch_ids(0).ravel() for s in ranks])
    real = flat[flat != PAD_ID]
    assert sorted(real.tolist()) == np.flatnonzero(kept).tolist()
    assert ranks[0].steps_per_epoch() == -(-80 // 8)


def test_weights_with_kept_draw_only_kept_ids():
    n = 100
    kept = np.arange(n) < 20
    s = Sampler(n, 10)
    s.set_plan(EpochPlan(weights=np.ones(n), kept=kept))
    assert set(s.epoch_order(0).tolist()) <= set(range(20)) and s.epoch_order(0).size == n


@pytest.mark.parametrize("plan,field", [
    (dict(weights=np.ones(9)), "plan.weights"),
    (dict(weights=np.r_[np.ones(9), np.nan]), "plan.weights"),
    (dict(weights=np.r_[np.ones(9), -1.0]), "plan.weights"),
    (dict(weights=np.zeros(10)), "plan.weights"),
    (dict(kept=np.zeros(10, bool)), "plan.kept"),
    (dict(weights=np.r_[np.ones(5), np.zeros(5)], kept=np.arange(10) >= 5), "plan.weights"),
    (dict(erase_ratio=np.full(10, 1.5)), "plan.erase_ratio"),
    (dict(loss_weight=np.full(10, -1.0)), "plan.loss_weight"),
    (dict(aug_magnitude=np.full(10, np.inf)), "plan.aug_magnitude"),
])
def test_invalid_plans_are_refused_naming_the_field(plan, field):
    s = Sampler(10, 2)
    with pytest.raises(ConfigError) as e:
        s.set_plan(EpochPlan(**plan))
    assert field in e.value.fields and isinstance(e.value, ValueError)


def test_plan_constructor_refuses_bad_shapes_and_num_draws_without_weights():
    with pytest.raises(ConfigError, match="plan.weights"):
        EpochPlan(weights=np.ones((2, 5)))
    with pytest.raises(ConfigError, match="plan.num_draws"):
        EpochPlan(num_draws=10)
    with pytest.raises(ConfigError, match="plan.kept"):
        EpochPlan(kept=np.array([0, 2, 1]))


def _full_plan(n, seed=0):
    rng = np.random.default_rng(seed)
    return EpochPlan(weights=rng.random(n), kept=rng.random(n) > 0.3, aug_magnitude=rng.random(n).astype(np.float32),
                     erase_ratio=(rng.random(n) * 0.3).astype(np.float32), loss_weight=np.ones(n, np.float32),
                     num_draws=n // 2)


def test_plan_save_and_load_round_trip(tmp_path):
    plan = _full_plan(500)
    plan.save(tmp_path / "plan.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["plan.npz"]  # no temp file left behind
    back = EpochPlan.load(tmp_path / "plan.npz")
    assert back.digest() == plan.digest() and back.num_draws == 250
    uniform = EpochPlan()
    uniform.save(tmp_path / "u.npz")
    assert EpochPlan.load(tmp_path / "u.npz").mode == "uniform"


def test_plan_load_refuses_pickles_truncation_and_newer_formats(tmp_path):
    bad = tmp_path / "pickled.npz"
    np.savez(bad, format=np.int64(1), weights=np.array([object()], dtype=object))
    with pytest.raises(StateError):
        EpochPlan.load(bad)
    good = tmp_path / "good.npz"
    _full_plan(100).save(good)
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:300])
    with pytest.raises(StateError):
        EpochPlan.load(tmp_path / "cut.npz")
    newer = tmp_path / "newer.npz"
    np.savez(newer, format=np.int64(99), num_draws=np.int64(-1))
    with pytest.raises(StateError, match="newer vitdata"):
        EpochPlan.load(newer)


def test_plan_state_round_trips_through_plain_lists():
    plan = _full_plan(50)
    state = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in plan.to_state().items()}
    back = EpochPlan.from_state(json.loads(json.dumps(state)))
    assert back.digest() == plan.digest()


# -- state and resume ------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_plan", [False, True])
@pytest.mark.parametrize("position", [0, 1, 7, 14, 15])
def test_state_round_trip_mid_epoch_gives_the_uninterrupted_remaining_ids(position, with_plan):
    n = 250
    plan = _full_plan(n, seed=3) if with_plan else None
    ref = Sampler(n, 4, seed=11, rank=1, world_size=2, drop_last=False)
    ref.set_plan(plan)
    ref.set_epoch(3)
    full = ref.epoch_ids(3)
    assert position <= len(full)
    ref.set_epoch(3, position=position)
    state = ref.state_dict()
    json.dumps({k: v for k, v in state.items() if k != "plan"})  # scalars are JSON-able
    resumed = Sampler(n, 4, seed=11, rank=1, world_size=2, drop_last=False)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.remaining_ids(), full[position:])
    assert len(list(resumed)) == len(full) - position


def test_chained_resumes_and_the_epoch_boundary_reproduce_the_reference():
    n = 200
    ref = Sampler(n, 5, seed=2)
    reference = [ref.epoch_ids(e) for e in range(3)]
    seen = {e: [] for e in range(3)}
    s = Sampler(n, 5, seed=2)
    for epoch, stops in [(0, [3, 9, 20]), (1, [40]), (2, [0])]:
        s.set_epoch(epoch)
        consumed = 0
        for stop in stops + [len(s)]:
            for batch in s.remaining_ids()[: stop - consumed]:
                seen[epoch].append(batch)
            consumed = stop
            state = s.state_dict()
            state["position"] = consumed
            s = Sampler(n, 5, seed=2)
            s.load_state_dict(state)
    for e in range(3):
        np.testing.assert_array_equal(np.stack(seen[e]), reference[e])


def test_world_size_change_4_2_3_keeps_each_global_steps_ids_and_5_is_refused():
    n, g = 500, 24
    ref = Sampler(n, g, seed=6)
    reference = ref.global_epoch_ids(1)
    position = 0
    state = None
    for world, stop in [(4, 5), (2, 12), (3, len(reference))]:
        ranks = [Sampler(n, resume_batch_size(g, world), rank=r, world_size=world, seed=6) for r in range(world)]
        for s in ranks:
            if state is None:
                s.set_epoch(1)
            else:
                s.load_state_dict(state)
        tails = [s.remaining_ids() for s in ranks]
        for k in range(stop - position):
            step_ids = np.concatenate([t[k] for t in tails])
            assert sorted(step_ids.tolist()) == sorted(reference[position + k].tolist())
        position = stop
        ranks[0].set_epoch(1, position)
        state = ranks[0].state_dict()
    with pytest.raises(ConfigError) as e:
        resume_batch_size(g, 5)
    assert {"global_batch_size", "world_size"} <= set(e.value.fields)
    assert "24" in str(e.value) and "5" in str(e.value)
    with pytest.raises(ConfigError) as e:
        Sampler(n, 4, world_size=5, seed=6).load_state_dict(state)
    assert "global_batch_size" in e.value.fields


def test_resume_refuses_a_changed_global_batch_seed_or_size():
    state = Sampler(100, 4, seed=1, world_size=2).state_dict()
    with pytest.raises(ConfigError, match="global batch"):
        check_resume(state, world_size=2, batch_size=8)
    with pytest.raises(ConfigError) as e:
        Sampler(100, 4, seed=2, world_size=2).load_state_dict(state)
    assert e.value.fields == ("seed",)
    with pytest.raises(ConfigError) as e:
        Sampler(101, 4, seed=1, world_size=2).load_state_dict(state)
    assert e.value.fields == ("num_samples",)
    with pytest.raises(StateError, match="newer"):
        Sampler(100, 4, seed=1, world_size=2).load_state_dict({**state, "format": 9})


def test_building_an_imagenet_sized_weighted_epoch_is_fast():
    import time
    n = 1_281_167
    s = Sampler(n, 256, seed=0, world_size=8)
    s.set_plan(EpochPlan(weights=np.random.default_rng(0).random(n)))
    t = time.perf_counter()
    s.epoch_ids(0)
    assert time.perf_counter() - t < 1.0
