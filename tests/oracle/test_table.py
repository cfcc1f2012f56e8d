"""The per-sample table: what report() records, how pending reports fold, and that report() never syncs."""
import math

import numpy as np
import pytest
import torch

from vitdata.errors import ConfigError
from vitdata.oracle.difficulty import POLICIES, DifficultyOracle


def cpu_oracle(n=10, policy="uniform", **kw):
    return DifficultyOracle(n, policy, device="cpu", **kw)


def test_the_table_fits_in_tens_of_megabytes_for_imagenet():
    o = cpu_oracle(1_281_167)
    nbytes = sum(t.element_size() * t.numel() for t in o._t.values())
    assert nbytes / 1_281_167 <= 25
    assert nbytes < 40e6


def test_repeated_visits_update_last_values_ema_and_counts_in_report_order():
    o = cpu_oracle(ema=0.5)
    o.report(torch.tensor([3, 5]), torch.tensor([1.0, 0.5]))
    o.report(torch.tensor([3]), torch.tensor([2.0]))
    o.report(torch.tensor([3]), torch.tensor([4.0]))
    t = o.table_arrays()
    assert t["seen"][3] == 3 and t["seen"][5] == 1 and t["seen"][0] == 0
    assert t["last_loss"][3] == 4.0
    assert t["ema_loss"][3] == pytest.approx(2.75)        # 1 -> 1.5 -> 2.75
    assert t["ema_loss"][5] == 0.5                         # the first visit sets the EMA
    assert t["p_y"][3] == pytest.approx(math.exp(-4.0), rel=1e-3)   # exp(-loss) without logits
    assert (t["last_epoch"][[3, 5]] == 0).all() and t["last_epoch"][0] == -1


def test_duplicate_ids_in_one_batch_fold_like_consecutive_reports():
    a, b = cpu_oracle(ema=0.7), cpu_oracle(ema=0.7)
    ids, losses = torch.tensor([3, 1, 3, 3, 1]), torch.tensor([1.0, 0.2, 2.0, 4.0, 0.9])
    a.report(ids, losses)
    for i, l in zip(ids, losses):
        b.report(i.reshape(1), l.reshape(1))
        b.sync()                                       # folding in pieces gives the same bits
    assert a.table_digest() == b.table_digest()


def test_forgetting_counts_correct_to_incorrect_transitions():
    o = cpu_oracle()
    for c in [True, False, True, False, False]:
        o.report(torch.tensor([2]), torch.tensor([0.3]), correct=torch.tensor([c]))
    t = o.table_arrays()
    assert t["forgetting"][2] == 2 and t["last_correct"][2] == 0 and t["seen"][2] == 5


def test_p_y_and_correct_come_from_logits_and_labels():
    o = cpu_oracle()
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 2])
    o.report(torch.tensor([0, 1]), torch.tensor([0.1, 3.0]), logits=logits, labels=labels)
    t = o.table_arrays()
    p = torch.softmax(logits, -1)
    assert t["p_y"][0] == pytest.approx(float(p[0, 0]), rel=1e-3)
    assert t["p_y"][1] == pytest.approx(float(p[1, 2]), rel=1e-3)
    assert t["last_correct"][:2].tolist() == [1, 0]


def test_soft_targets_and_p_true_set_p_y():
    o = cpu_oracle()
    logits = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    soft = torch.tensor([[0.7, 0.3], [0.5, 0.5], [0.8, 0.2]])
    o.report(torch.tensor([0, 1]), torch.tensor([1.0, 1.0]), logits=logits[:2], labels=soft[:2])
    # own label 1 holds 0.2 of sample 3's target: p 0.5 / 0.2 clips to 1
    o.report(torch.tensor([3]), torch.tensor([1.0]), logits=logits[2:], labels=soft[2:], own_labels=torch.tensor([1]))
    o.report(torch.tensor([2]), torch.tensor([5.0]), p_true=torch.tensor([0.9]))
    t = o.table_arrays()
    # without own_labels the label with the most mass stands in: 0.5 / 0.7 and 0.5 / 0.5
    assert t["p_y"][0] == pytest.approx(0.5 / 0.7, rel=1e-3) and t["p_y"][1] == pytest.approx(1.0, rel=1e-3)
    assert t["p_y"][2] == pytest.approx(0.9, rel=1e-3) and t["p_y"][3] == pytest.approx(1.0, rel=1e-3)


def test_a_model_that_predicts_the_mixup_target_is_easy_whatever_the_mixing_share():
    # docs/methods.md §1: DeiT's Mixup 0.8 / CutMix 1.0 with smoothing 0.1. The dot product of the softmax
    # with the mixed target reaches 0.8 for a perfect model only when lambda is near 0 or 1 (or the partner
    # shares the class): a small minority of samples, so DDP_e was capped; the own label's probability
    # over its share is 1 for every sample.
    from timm.data import Mixup
    from vitdata.oracle.difficulty import own_label_p
    torch.manual_seed(0)
    n, c = 4000, 10
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=c, mode="elem")
    x, y = torch.randn(n, 3, 8, 8), torch.randint(0, c, (n,))
    _, target = mix(x, y)
    perfect = torch.log(target)
    dot = (torch.softmax(perfect, -1) * target).sum(-1)
    assert (dot >= 0.8).float().mean() < 0.25                   # the old definition: ~16 % easy here
    p = own_label_p(perfect, y, target)
    lam = (target.gather(1, y[:, None]).squeeze(1) - 0.01) / 0.9      # the own label's mixing share
    assert torch.allclose(p, ((0.9 * lam + 0.01) / lam).clamp(max=1.0), atol=1e-5)
    assert (p >= 0.9).all()
    o = cpu_oracle(n)
    o.report(torch.arange(n), torch.zeros(n), logits=perfect, labels=target, own_labels=y)
    assert (o.table_arrays()["p_y"] >= 0.8).mean() == 1.0


def test_padding_ids_and_non_finite_losses_are_ignored_and_counted():
    o = cpu_oracle()
    o.report(torch.tensor([-1, 4, 5, -1]), torch.tensor([1.0, float("nan"), 2.0, 3.0]))
    o.end_epoch(0)
    t = o.table_arrays()
    assert t["seen"].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert o.last_metrics["n_ignored"] == 3 and o.last_metrics["n_reports"] == 1


def test_an_id_past_the_dataset_is_an_error_at_fold_time():
    o = cpu_oracle()
    o.report(torch.tensor([10]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="out of range"):
        o.sync()


def test_report_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        cpu_oracle().report(torch.tensor([1, 2]), torch.tensor([1.0]))


@pytest.fixture
def one_thread():
    """One intra-op thread: thousands of tiny ops on 2 threads, with the other core busy, wait a scheduler
    slice at each op's thread barrier (a 2 s test took 40-70 s on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_report_never_asks_the_host_for_tensor_values(monkeypatch, one_thread):
    o = cpu_oracle(100)
    o.report(torch.arange(4), torch.ones(4))          # first call may allocate
    def refuse(*a, **k):
        raise AssertionError("host sync in report()")
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    logits = torch.randn(8, 5)
    for _ in range(3000):                            # past the first buffer growth
        o.report(torch.arange(8), torch.rand(8), logits=logits, labels=torch.zeros(8, dtype=torch.long))
    o.report(torch.arange(8), torch.rand(8), p_true=torch.rand(8), correct=torch.ones(8, dtype=torch.bool))
    monkeypatch.undo()
    assert int(o.table_arrays()["seen"].sum()) == 4 + 3001 * 8


def test_unknown_policy_and_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="policy"):
        cpu_oracle(policy="nope")
    with pytest.raises(ConfigError, match="alpha"):
        cpu_oracle(alpha=0.2, beta=0.3)
    with pytest.raises(ConfigError, match="floor"):
        cpu_oracle(policy="weighted", floor=0.0)
    assert {"uniform", "data-centric", "prune-easy", "weighted"} <= set(POLICIES)


def test_loss_weights_follow_the_plan_and_zero_padding():
    o = cpu_oracle(8, "prune-easy", ratio=0.5)
    ids = torch.tensor([0, 3, -1])
    assert o.loss_weights(ids).tolist() == [1.0, 1.0, 0.0]
    o.report(torch.arange(8), torch.tensor([0.1, 0.1, 0.1, 0.1, 2.0, 2.0, 2.0, 2.0]))
    plan = o.end_epoch(0)
    want = np.where(np.arange(3) < 2, plan.loss_weight[[0, 3, 0]], 0.0)
    assert o.loss_weights(ids).numpy().tolist() == pytest.approx(want.tolist())
    assert set(plan.loss_weight[:4].tolist()) <= {1.0, 2.0} and (plan.loss_weight[4:] == 1.0).all()


def test_p_true_with_logits_keeps_correct_from_the_logits():
    o = cpu_oracle()
    o.report(torch.tensor([0, 1]), torch.ones(2), logits=torch.tensor([[3.0, 0.0], [3.0, 0.0]]),
             labels=torch.tensor([0, 1]), p_true=torch.tensor([0.6, 0.4]))
    t = o.table_arrays()
    assert t["last_correct"][:2].tolist() == [1, 0]
    assert t["p_y"][:2].tolist() == pytest.approx([0.6, 0.4], rel=1e-3)


def test_label_smoothing_leaves_an_unmixed_samples_p_y_at_its_softmax_probability():
    # timm's Mixup with smoothing 0.1 gives an unmixed sample (lambda 1) the target 0.91 on its label and
    # 0.01 elsewhere. p_y is the own label's probability over its mixing share (1), not over 0.91: a
    # softmax of 0.75 is not easy (p_y >= 0.8); dividing by 0.91 read 0.82.
    from timm.data import Mixup
    from vitdata.oracle.difficulty import own_label_p
    n, c = 8, 10
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=c, prob=0.0)
    x, y = torch.randn(n, 3, 8, 8), torch.arange(n) % c
    _, target = mix(x, y)
    assert torch.allclose(target.gather(1, y[:, None]).squeeze(1), torch.full((n,), 0.91))
    logits = torch.full((n, c), 0.0)
    logits[torch.arange(n), y] = math.log(0.75 / 0.25 * (c - 1))   # softmax 0.75 on the own label
    p = own_label_p(logits, y, target)
    assert torch.allclose(p, torch.full((n,), 0.75), atol=1e-5)
    # mixed half and half with another class: the share is 0.5, so a softmax of 0.45 reads 0.9
    half = torch.full((1, c), 0.01)
    half[0, 0] = half[0, 1] = 0.9 * 0.5 + 0.01
    lg = torch.log(torch.tensor([[0.45, 0.45] + [0.1 / (c - 2)] * (c - 2)]))
    assert own_label_p(lg, torch.tensor([0]), half).item() == pytest.approx(0.9, abs=1e-5)
