"""One gloo rank for test_ddp_ranks.py (C3, H1, G5). Run as a script:

    loader_rank_worker.py MODE RANK WORLD INIT_FILE DATA OUT

MODE "oracle": a real Loader (torch backend, no workers) with a weighted DifficultyOracle, 3 epochs;
each rank reports losses that depend on the rank (uneven). After every epoch it writes the oracle table
digest, the committed plan's digest (and the plan itself, EpochPlan.save) and the ids it was given.

MODE "g5": 3 epochs with on_error="raise" and a DDP-like all_reduce after every step; the collective
timeout is 10 s. The rank that hits a bad sample dies with the DataError; the other must not hang.
"""
import datetime
import json
import sys
import time

import torch
import torch.distributed as dist

from vitdata import LoaderConfig, create_loader
from vitdata.loader.config import AugmentConfig

EPOCHS = 3
BATCH = 8
FULL_VIEW = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)


def losses_for(ids: torch.Tensor, rank: int, epoch: int, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 * epoch + 10 * step + rank)
    base = 0.05 + (ids.double() % 17) / 6.0
    return (base * 0.9 ** epoch + 0.4 * rank + 0.3 * torch.rand(ids.shape, generator=gen, dtype=torch.float64)).float()


def run_oracle(rank: int, world: int, data: str, out: str) -> None:
    from vitdata.oracle.difficulty import DifficultyOracle

    cfg = LoaderConfig(data=data, batch_size=BATCH, image_size=16, backend="torch", num_workers=0, seed=7,
                       augment=FULL_VIEW)
    probe = create_loader(cfg)
    n = len(probe.index)
    probe.close()
    oracle = DifficultyOracle(n, "weighted", device="cpu", seed=3, floor=0.4)
    loader = create_loader(cfg, oracle=oracle)
    record, tables = [], []
    for epoch in range(EPOCHS):
        loader.set_epoch(epoch)            # epoch > 0: oracle.end_epoch(epoch - 1), a collective
        if epoch > 0:
            tables.append(oracle.table_digest())   # table after end_epoch(epoch - 1); a collective too
        plan = loader.sampler.plan
        plan_file = None
        if plan is not None:
            plan_file = f"{out}.plan{epoch}.npz"
            plan.save(plan_file)
        ids = []
        for step, b in enumerate(loader):
            ids.append(b.ids.tolist())
            loader.report(b.ids, losses_for(b.ids, rank, epoch, step))
        record.append({"epoch": epoch, "ids": ids, "plan_file": plan_file,
                       "plan_digest": None if plan is None else plan.digest()})
    loader.set_epoch(EPOCHS)               # ends the last epoch too
    tables.append(oracle.table_digest())
    final = {"tables": tables, "plan": oracle.plan.digest()}
    digests = [None] * world
    dist.all_gather_object(digests, final)
    loader.close()
    with open(out, "w") as f:
        json.dump({"rank": rank, "epochs": record, "final": final, "all_final": digests,
                   "metrics": oracle.metrics}, f)


def run_g5(rank: int, world: int, data: str, out: str) -> None:
    cfg = LoaderConfig(data=data, batch_size=BATCH, image_size=16, backend="torch", num_workers=0, seed=7,
                       augment=FULL_VIEW, on_error="raise")
    loader = create_loader(cfg)
    steps = 0
    with open(out, "a") as log:
        for epoch in range(EPOCHS):
            loader.set_epoch(epoch)
            for b in loader:
                t = torch.ones(1)
                dist.all_reduce(t)             # a gradient all-reduce stand-in
                steps += 1
                log.write(f"step {epoch} {steps} {time.time():.3f}\n")
                log.flush()
        log.write(f"done {time.time():.3f}\n")
    loader.close()


def main():
    mode, rank, world, init_file, data, out = sys.argv[1:7]
    rank, world = int(rank), int(world)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=10 if mode == "g5" else 60))
    if mode == "oracle":
        run_oracle(rank, world, data, out)
        dist.barrier()
        dist.destroy_process_group()
    else:
        run_g5(rank, world, data, out)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
