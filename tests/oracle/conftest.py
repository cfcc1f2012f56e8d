"""A simulated trainer for the oracle tests: known per-sample difficulty, noisy losses, a real Sampler."""
import numpy as np
import pytest
import torch

from vitdata.oracle.difficulty import DifficultyOracle
from vitdata.data.sampler import Sampler


class SimulatedTrainer:
    """Sample i has a true-class probability ``p_true[i]`` (its difficulty is ``1 - p_true[i]``); each
    visit reports the cross-entropy ``-log p`` of a noisy ``p``, optionally lowered by the plan's extra
    augmentation (``aug_effect`` per unit of magnitude), through a real Sampler driven by the plan."""

    def __init__(self, oracle: DifficultyOracle, p_true: np.ndarray, *, batch_size: int = 20, seed: int = 0,
                 noise: float = 0.03, aug_effect: float = 0.0):
        self.oracle, self.p_true = oracle, torch.as_tensor(p_true, dtype=torch.float32)
        self.sampler = Sampler(len(p_true), batch_size, seed=seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.noise, self.aug_effect = noise, aug_effect
        self.reads = []          # per epoch: np.int64[N] read counts
        self.plans = []          # plan used in each epoch (None = uniform)

    def losses(self, ids: torch.Tensor, plan) -> torch.Tensor:
        p = self.p_true[ids] + self.noise * torch.randn(ids.shape, generator=self.gen)
        if plan is not None and plan.aug_magnitude is not None:
            p = p - self.aug_effect * torch.from_numpy(plan.aug_magnitude)[ids]
        return -torch.log(p.clamp(1e-4, 1.0))

    def run_epoch(self, epoch: int):
        plan = self.oracle.plan
        self.sampler.set_plan(plan)
        ids_epoch = self.sampler.epoch_ids(epoch)
        self.reads.append(np.bincount(ids_epoch.ravel(), minlength=len(self.p_true)))
        self.plans.append(plan)
        for row in ids_epoch:
            ids = torch.from_numpy(row.copy())
            self.oracle.report(ids, self.losses(ids, plan))
        return self.oracle.end_epoch(epoch)

    def run(self, epochs: int):
        for e in range(epochs):
            self.run_epoch(e)
        return self


@pytest.fixture
def simulate():
    return SimulatedTrainer
