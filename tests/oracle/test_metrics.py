"""DDP, KAR, the training period and the difficulty histogram on a hand-made history (operational
definitions of docs/methods.md §1: easy p_y >= 0.8, hard p_y <= 0.3, KAR = mean |change| of DDP_e and DDP_h)."""
import json

import pytest
import torch

from vitdata.oracle.difficulty import DifficultyOracle

# (ids visited, their p_y) per epoch. p_y values keep 1 - p_y away from the histogram's bin edges.
HISTORY = [
    (range(10), [0.85, 0.85, 0.15, 0.15, 0.15, 0.55, 0.55, 0.25, 0.25, 0.25]),
    (range(10), [0.85] * 5 + [0.55] * 3 + [0.15] * 2),
    (range(5), [0.95, 0.95, 0.95, 0.95, 0.15]),        # a partial epoch: shares among the visited only
    (range(10), [0.85] * 8 + [0.55, 0.15]),
]
DDP_E = [0.2, 0.5, 0.8, 0.8]
DDP_H = [0.6, 0.2, 0.2, 0.1]
KAR_RAW = [0.0, (0.3 + 0.4) / 2, (0.3 + 0.0) / 2, (0.0 + 0.1) / 2]     # 0, .35, .15, .05
KAR_W2 = [0.0, 0.175, 0.25, 0.1]                                       # mean of the last two raw values
PERIODS = ["formation", "growth", "growth", "exploration"]             # .1 <= 0.5 * peak(.25), DDP_e > DDP_h


def run(history=HISTORY, **kw):
    kw = {"kar_window": 2, "explore_kar_frac": 0.5, **kw}
    o = DifficultyOracle(10, device="cpu", **kw)
    for e, (ids, p) in enumerate(history):
        p = torch.tensor(p)
        o.report(torch.tensor(list(ids)), -torch.log(p), p_true=p)
        o.end_epoch(e)
    return o


def test_ddp_shares_are_among_the_samples_visited_this_epoch():
    o = run()
    assert [m["ddp_e"] for m in o.metrics] == pytest.approx(DDP_E)
    assert [m["ddp_h"] for m in o.metrics] == pytest.approx(DDP_H)
    assert [m["n_visited"] for m in o.metrics] == [10, 10, 5, 10]


def test_kar_is_the_mean_absolute_change_of_the_ddp_curves_smoothed_over_the_window():
    o = run()
    assert [m["kar_raw"] for m in o.metrics] == pytest.approx(KAR_RAW)
    assert [m["kar"] for m in o.metrics] == pytest.approx(KAR_W2)


def test_a_window_of_one_reports_raw_kar():
    o = DifficultyOracle(10, device="cpu", kar_window=1)
    for e, (ids, p) in enumerate(HISTORY):
        o.report(torch.tensor(list(ids)), torch.zeros(len(p)), p_true=torch.tensor(p))
        o.end_epoch(e)
    assert [m["kar"] for m in o.metrics] == pytest.approx(KAR_RAW)


def test_periods_follow_the_operational_rules_and_never_go_back():
    o = run()
    assert [m["period"] for m in o.metrics] == PERIODS
    # Hard samples dominating again later does not return to formation.
    o.report(torch.arange(10), torch.ones(10), p_true=torch.full((10,), 0.1))
    o.end_epoch(4)
    assert o.last_metrics["period"] == "exploration"


def test_the_exploration_threshold_is_configurable():
    o = run(explore_kar_frac=0.39)       # the epoch-3 kar (.1) is above 0.39 * peak (.25)
    assert o.metrics[-1]["period"] == "growth"


def test_difficulty_histogram_uses_fixed_bins_of_one_minus_p_y():
    o = run()
    assert o.hist_edges == pytest.approx([i / 10 for i in range(11)])
    assert o.metrics[0]["histogram"] == [0, 2, 0, 0, 2, 0, 0, 3, 3, 0]
    assert o.metrics[2]["histogram"] == [4, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    assert all(sum(m["histogram"]) == m["n_visited"] for m in o.metrics)


def test_group_losses_and_metrics_are_plain_json():
    o = run()
    m = o.metrics[1]
    assert m["easy_loss"] == pytest.approx(-torch.log(torch.tensor(0.85)).item(), rel=1e-6)
    assert m["hard_loss"] == pytest.approx(-torch.log(torch.tensor(0.15)).item(), rel=1e-6)
    assert json.loads(json.dumps(o.metrics, allow_nan=False)) == o.metrics


def test_a_run_that_starts_at_a_later_epoch_tags_its_reports_with_that_epoch():
    o = DifficultyOracle(10, device="cpu")
    o.report(torch.arange(10), torch.zeros(10), p_true=torch.full((10,), 0.9))
    o.end_epoch(7)
    assert o.last_metrics["epoch"] == 7 and o.last_metrics["n_visited"] == 10 and o.epoch == 8
    assert (o.table_arrays()["last_epoch"] == 7).all()
