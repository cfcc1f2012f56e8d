"""The trainer's reports before the oracle folds them: what one report says per sample (loss, ``p_y``,
correct), and :class:`PendingReports`, the device-side buffers ``report`` appends to without a host sync.
"""
from __future__ import annotations

import numpy as np
import torch

from vitdata.errors import StateError
from vitdata.oracle.metrics import own_label_p

_FIELDS = {"ids": torch.int64, "loss": torch.float32, "p": torch.float32, "correct": torch.bool}


def read_report(losses: torch.Tensor, device: torch.device, *, logits=None, labels=None, correct=None, p_true=None,
                own_labels=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss float32, ``p_y`` float32, correct bool), each (B,) on ``device``, from one report (see
    :meth:`vitdata.oracle.difficulty.DifficultyOracle.report` for the arguments). No host sync."""
    b = losses.shape[0]
    loss = losses.detach().to(device=device, dtype=torch.float32)
    if logits is not None:
        if labels is None:
            raise ValueError("report: logits given without labels")
        lg = logits.detach().to(device=device).float()
        lab = labels.detach().to(device=device)
        hard = lab.argmax(-1) if lab.dim() == 2 else lab.long().reshape(b)
    if p_true is not None:
        p = p_true.detach().to(device=device, dtype=torch.float32).reshape(b)
    elif logits is not None:
        if lab.dim() == 2:
            own = hard if own_labels is None else own_labels.detach().to(device=device).long().reshape(b)
            p = own_label_p(lg, own, lab)
        else:
            p = torch.softmax(lg, dim=-1).gather(1, hard.reshape(b, 1)).reshape(b)
    else:
        p = torch.exp(-loss)
    if correct is not None:
        c = correct.detach().to(device=device).reshape(b).bool()
    elif logits is not None:
        # true-class logit is a maximum (ties count as correct); amax is ~10x cheaper than argmax on CPU
        c = lg.gather(1, hard.reshape(b, 1)).reshape(b) >= lg.amax(-1)
    else:
        c = p > 0.5
    return loss, p, c


class PendingReports:
    """Entries (id, loss, p, correct) reported since the last fold, in device buffers that grow by doubling,
    and how many each ``report`` call added (``counts``: the canonical order across ranks uses it)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.n = 0
        self.counts: list[int] = []
        self._cap = 0
        self._buf: dict[str, torch.Tensor] = {}
        self.reserve(4096)

    def reserve(self, need: int) -> None:
        """Room for ``need`` entries, so appending never reallocates before that."""
        if need <= self._cap:
            return
        cap = max(int(need), 2 * self._cap, 4096)
        new = {k: torch.empty(cap, dtype=dt, device=self.device) for k, dt in _FIELDS.items()}
        if self.n:
            for k, t in new.items():
                t[:self.n].copy_(self._buf[k][:self.n])
        self._buf, self._cap = new, cap

    def append(self, ids: torch.Tensor, loss: torch.Tensor, p: torch.Tensor, correct: torch.Tensor) -> None:
        """Copy one report's (B,) tensors in (device to device: no host sync)."""
        b = ids.shape[0]
        if self.n + b > self._cap:
            self.reserve(self.n + b)
        s = slice(self.n, self.n + b)
        self._buf["ids"][s].copy_(ids.detach().reshape(b))
        self._buf["loss"][s].copy_(loss)
        self._buf["p"][s].copy_(p)
        self._buf["correct"][s].copy_(correct)
        self.n += b
        self.counts.append(b)

    def take(self) -> tuple[tuple[torch.Tensor, ...], list[int]]:
        """((ids, loss, p, correct) copies of the pending entries, counts); empties the buffers."""
        n, counts = self.n, self.counts
        out = tuple(self._buf[k][:n].clone() for k in _FIELDS)
        self.clear()
        return out, counts

    def clear(self) -> None:
        self.n, self.counts = 0, []

    def state(self, rank: int, world: int) -> dict:
        """The pending entries as host arrays, tagged with the rank and world size that reported them."""
        n = self.n
        return {"rank": rank, "world_size": world, "counts": [int(c) for c in self.counts],
                "ids": self._buf["ids"][:n].cpu().numpy().copy(), "loss": self._buf["loss"][:n].cpu().numpy().copy(),
                "p": self._buf["p"][:n].cpu().numpy().copy(),
                "correct": self._buf["correct"][:n].cpu().numpy().astype(np.uint8)}

    def restore(self, pending: dict | None, rank: int, world: int) -> None:
        """Take back a :meth:`state` of this rank and world size (another rank's reports are not this
        rank's to replay: they are dropped)."""
        if not pending or pending.get("rank") is None:
            return
        if (int(pending["rank"]), int(pending["world_size"])) != (rank, world):
            return
        ids = np.asarray(pending["ids"], np.int64)
        counts = [int(c) for c in pending.get("counts", [])]
        if sum(counts) != ids.size:
            raise StateError(f"oracle state: pending counts sum to {sum(counts)} but {ids.size} ids are pending")
        n = ids.size
        if n == 0:
            return
        self.reserve(n)
        self._buf["ids"][:n].copy_(torch.from_numpy(ids))
        self._buf["loss"][:n].copy_(torch.from_numpy(np.asarray(pending["loss"], np.float32)))
        self._buf["p"][:n].copy_(torch.from_numpy(np.asarray(pending["p"], np.float32)))
        self._buf["correct"][:n].copy_(torch.from_numpy(np.asarray(pending["correct"]).astype(bool)))
        self.n, self.counts = n, counts
