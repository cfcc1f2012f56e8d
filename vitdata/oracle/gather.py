"""The oracle's collectives: every rank's pending reports and skip flags, gathered under ``torch.distributed``
in one canonical order, so every rank folds the same entries into a bit-identical table.

Each function is a collective when a process group of more than one rank is initialised (every rank must
call it at the same point) and returns its input unchanged otherwise.
"""
from __future__ import annotations

import numpy as np
import torch


def dist_world(process_group=None):
    """(``torch.distributed``, world size) when a process group is initialised, else (None, 1)."""
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d, d.get_world_size(process_group)
    return None, 1


def _gather_sizes(d, world: int, n: int, device, process_group) -> list[int]:
    sizes = torch.tensor([n], dtype=torch.int64, device=device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    d.all_gather(all_sizes, sizes, group=process_group)
    return [int(k) for k in torch.cat(all_sizes).tolist()]


def gather_reports(ids: torch.Tensor, loss: torch.Tensor, p: torch.Tensor, correct: torch.Tensor, counts: list[int],
                   device, process_group=None) -> tuple[torch.Tensor, ...]:
    """Every rank's pending entries as (ids, loss, p, correct), in the canonical order (report call index,
    rank, position), which does not depend on where earlier folds cut the epoch as long as all ranks fold
    at the same call. ``counts``: this rank's entries per ``report`` call."""
    d, world = dist_world(process_group)
    if world == 1:
        return ids, loss, p, correct
    n = ids.numel()
    step = torch.from_numpy(np.repeat(np.arange(len(counts), dtype=np.int64),
                                      np.asarray(counts, dtype=np.int64))).to(device)
    # Pack into float64 (ids < 2**53, float32 and bool exact) so one padded all_gather moves all of it.
    all_sizes = _gather_sizes(d, world, n, device, process_group)
    m = max(all_sizes)
    packed = torch.zeros((m, 5), dtype=torch.float64, device=device)
    packed[:n] = torch.stack([ids.double(), loss.double(), p.double(), correct.double(), step.double()], 1)
    out = [torch.empty_like(packed) for _ in range(world)]
    d.all_gather(out, packed, group=process_group)
    rows = torch.cat([o[:k] for o, k in zip(out, all_sizes)])
    order = torch.argsort(rows[:, 4], stable=True)   # rank-major within a step: (step, rank, position)
    rows = rows[order]
    return rows[:, 0].long(), rows[:, 1].float(), rows[:, 2].float(), rows[:, 3].bool()


def gather_skips(local: np.ndarray, device, process_group=None) -> np.ndarray:
    """The distinct ids any rank flagged as skipped (``local``: this rank's, distinct, int64)."""
    d, world = dist_world(process_group)
    if world == 1:
        return local
    all_sizes = _gather_sizes(d, world, local.size, device, process_group)
    m = max(all_sizes)
    if not m:
        return local
    buf = torch.full((m,), -1, dtype=torch.int64, device=device)
    buf[:local.size] = torch.from_numpy(local).to(device)
    out = [torch.empty_like(buf) for _ in range(world)]
    d.all_gather(out, buf, group=process_group)
    return np.unique(torch.cat([o[:k] for o, k in zip(out, all_sizes)]).cpu().numpy())
