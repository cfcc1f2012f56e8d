"""The difficulty oracle: per-sample feedback from the trainer -> the next epoch's plan.

Owns the per-sample table (last and EMA loss, p_y, visits, forgetting events), its fold and state
(:mod:`.difficulty`), the reports pending before a fold (:mod:`.reports`), their gathering across ranks
(:mod:`.gather`), the DDP/KAR training-stage metrics and periods (:mod:`.metrics`), and the policies that
turn the table into an :class:`~vitdata.data.sampler.EpochPlan`: sampling weights or a kept set,
per-sample RandAugment boost and PatchErasing ratio, loss weights (:mod:`.policies`).

May import: ``vitdata.errors``, ``vitdata.io``, ``vitdata.data`` (the plan's type). Never touches pixels.
"""
from vitdata.oracle.difficulty import DifficultyOracle, make_oracle, own_label_p
from vitdata.oracle.policies import POLICIES

__all__ = ["DifficultyOracle", "POLICIES", "make_oracle", "own_label_p"]
