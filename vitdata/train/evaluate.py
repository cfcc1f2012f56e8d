"""The training loop's evaluation: top-1, top-5 and loss over a split, summed across ranks, with a file that
cannot be read, decoded or labelled counted and skipped instead of ending the run (docs/reliability.md J5).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vitdata.errors import DataError


@torch.no_grad()
def evaluate(model, loader, device, amp_ctx, strict: bool = False) -> dict:
    """Top-1/top-5 (%) and mean loss over the validation split, summed across ranks (padding ids < 0 skipped).

    A file that cannot be read, decoded or labelled (a ``DataError``) takes only its own sample: it is counted
    (``skipped``, summed over ranks) and listed (``bad_files``: path, reason and detail, every rank's), and the
    loop goes on over the other files, each good file evaluated once (docs/reliability.md J5). ``strict``:
    the first such error ends the evaluation (raised)."""
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # correct1, correct5, loss, count, skipped
    bad = []
    try:
        while True:   # the loader goes on after the sample an error named (README, "Evaluation with raise")
            try:
                for batch in loader:
                    with amp_ctx():
                        logits = model(batch.images)
                    logits, labels = logits.float(), batch.labels.long()
                    valid = batch.ids >= 0
                    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
                    hit = top5 == labels[:, None]
                    sums[0] += (hit[:, 0] & valid).sum()
                    sums[1] += (hit.any(1) & valid).sum()
                    sums[2] += (F.cross_entropy(logits, labels, reduction="none") * valid).sum()
                    sums[3] += valid.sum()
                break
            except DataError as e:
                if strict:
                    raise
                bad.append({"path": e.path, "reason": e.reason, "sample": e.sample_id, "detail": e.detail[:300]})
    finally:
        model.train()
    sums[4] += len(bad)
    if dist.is_initialized():
        dist.all_reduce(sums)
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, bad)
        bad = [b for rank_bad in every for b in rank_bad]
    n = max(1.0, sums[3].item())  # sync: once per evaluation, the figures are read here
    return {"top1": 100 * sums[0].item() / n, "top5": 100 * sums[1].item() / n, "loss": sums[2].item() / n,
            "count": int(sums[3].item()), "skipped": int(sums[4].item()), "bad_files": bad}
