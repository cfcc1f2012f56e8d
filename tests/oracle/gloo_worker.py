"""One rank of the two-process gloo test (run as a script by test_distributed.py).

Each rank reports its own columns of every global step with rank-dependent losses; the test checks that
all ranks end every epoch with the same table and plan, and that they equal one process fed the reports
in the canonical order (step, rank, position).
"""
import argparse
import datetime
import json

import numpy as np
import torch

N, BATCH, WORLD, EPOCHS = 96, 8, 2, 4
POLICY, POLICY_KW = "weighted", {"floor": 0.4}
CKPT_AT = (2, 3)          # (epoch, step): every rank calls state_dict() (a collective) mid-epoch


def batch_for(global_row: np.ndarray, rank: int, epoch: int, step: int):
    """This rank's (ids, losses) at a global step: a pure function of its arguments."""
    ids = torch.from_numpy(global_row[rank * BATCH:(rank + 1) * BATCH].copy())
    if rank == 1 and epoch == 1 and step == 2:
        ids[0] = -1                                   # a skipped sample: never reaches the table
    gen = torch.Generator().manual_seed(10_000 * epoch + 100 * step + rank)
    base = torch.linspace(0.05, 3.0, N)
    losses = base[ids.clamp(min=0)] * 0.85 ** epoch + 0.2 * torch.rand(BATCH, generator=gen) + 0.05 * rank
    return ids, losses


def skipped_for(global_row: np.ndarray, rank: int, epoch: int, step: int) -> list[int]:
    """The ids this rank's loader skipped at a global step (the one ``batch_for`` replaces by -1)."""
    return [int(global_row[rank * BATCH])] if (rank, epoch, step) == (1, 1, 2) else []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--init", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch.distributed as dist
    from vitdata.oracle.difficulty import DifficultyOracle
    from vitdata.data.sampler import Sampler

    dist.init_process_group("gloo", init_method=args.init, rank=args.rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    oracle = DifficultyOracle(N, POLICY, device="cpu", seed=1, **POLICY_KW)
    sampler = Sampler(N, BATCH, seed=1, rank=args.rank, world_size=WORLD)
    record = []
    for epoch in range(EPOCHS):
        sampler.set_plan(oracle.plan)
        for step, row in enumerate(sampler.global_epoch_ids(epoch)):
            oracle.report(*batch_for(row, args.rank, epoch, step))
            oracle.mark_skipped(skipped_for(row, args.rank, epoch, step))
            if (epoch, step) == CKPT_AT:
                oracle.state_dict()
        plan = oracle.end_epoch(epoch)
        sampler.set_plan(plan)
        record.append({"table": oracle.table_digest(), "plan": plan.digest(),
                       "metrics": oracle.last_metrics,
                       "next_ids": sampler.epoch_ids(epoch + 1).tolist(),
                       "next_global": sampler.global_epoch_ids(epoch + 1).tolist()})
    with open(args.out, "w") as f:
        json.dump(record, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
