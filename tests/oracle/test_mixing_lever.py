"""The data-centric policy's Mixup/CutMix lever: the share of mixed batches follows the controller's strength."""
import pytest
import torch

from vitdata.oracle.difficulty import DifficultyOracle
from vitdata.oracle.policies import POLICIES


def test_mix_prob_follows_the_strength_and_is_zero_in_formation():
    policy = POLICIES["data-centric"](target_easy=0.5, gain=0.5, mix_lever=True)
    o = DifficultyOracle(4, policy, device="cpu")
    assert o.mix_prob() == 0.0                                        # before any plan: no mixing
    o.report(torch.arange(4), torch.zeros(4), p_true=torch.tensor([0.9, 0.1, 0.1, 0.1]))
    o.end_epoch(0)                                                    # DDP_e .25 < DDP_h .75: formation
    assert o.last_metrics["period"] == "formation" and o.mix_prob() == 0.0
    o.report(torch.arange(4), torch.zeros(4), p_true=torch.tensor([0.9, 0.9, 0.9, 0.9]))
    o.end_epoch(1)                                                    # all easy: strength 0.5 * (1 - 0.5)
    assert o.last_metrics["period"] != "formation"
    assert o.mix_prob() == pytest.approx(0.25) and o.last_metrics["mix_prob"] == pytest.approx(0.25)


def test_without_the_lever_the_trainers_mixing_is_left_alone():
    o = DifficultyOracle(4, "data-centric", device="cpu")
    o.report(torch.arange(4), torch.zeros(4), p_true=torch.tensor([0.9, 0.9, 0.9, 0.1]))
    o.end_epoch(0)
    assert o.mix_prob() is None and "mix_prob" not in o.last_metrics
    assert DifficultyOracle(4, "weighted", device="cpu").mix_prob() is None


def test_the_lever_survives_a_resume():
    a = DifficultyOracle(4, "data-centric", device="cpu", gain=1.0, mix_lever=True)
    a.report(torch.arange(4), torch.zeros(4), p_true=torch.tensor([0.9, 0.9, 0.9, 0.1]))
    a.end_epoch(0)
    b = DifficultyOracle(4, "data-centric", device="cpu", gain=1.0, mix_lever=True)
    b.load_state_dict(a.state_dict())
    assert a.mix_prob() > 0 and b.mix_prob() == a.mix_prob()
