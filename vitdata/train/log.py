"""A training run's log: JSONL records (:class:`Logger`, :func:`read_log`) and its progress line.
"""
from __future__ import annotations

import json
import os
import sys

from vitdata.optional import optional_import


def read_log(path: str) -> dict[str, list[dict]]:
    """Records of the JSONL log grouped by ``kind``; a torn last line (crash mid-write) is skipped."""
    out: dict[str, list[dict]] = {}
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            out.setdefault(r.get("kind", "?"), []).append(r)
    return out


def _record_time(line: str) -> float:
    try:
        return float(json.loads(line).get("time", 0.0))
    except ValueError:  # a torn last line
        return float("inf")


class PlainProgress:
    """What stands in for a tqdm bar without tqdm: ``step N/total (p %)`` and the postfix as one plain line on
    stderr at most every ``every_s`` seconds, and at the last step. Same methods as the Logger uses."""

    def __init__(self, total: int, initial: int = 0, every_s: float = 10.0):
        import time

        self.total, self.n, self.every_s, self._clock = total, initial, every_s, time.monotonic
        self._last, self._postfix = self._clock(), {}

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        if now - self._last >= self.every_s or self.n >= self.total:
            self._last = now
            post = " ".join(f"{k}={v}" for k, v in self._postfix.items())
            print(f"step {self.n}/{self.total} ({100.0 * self.n / max(1, self.total):.0f} %) {post}".rstrip(),
                  file=sys.stderr, flush=True)

    def set_postfix(self, postfix: dict, refresh: bool = False) -> None:
        self._postfix = dict(postfix)

    def write(self, text: str) -> None:
        print(text)

    def close(self) -> None:
        pass


class Logger:
    """JSONL always (rank 0), TensorBoard when importable, a tqdm bar when asked.

    ``resume_time`` (s): a resumed run first drops the records logged after its checkpoint's time (a killed
    run may have logged past its last checkpoint; those steps are redone)."""

    def __init__(self, out_dir: str, rank: int, total_steps: int, progress: bool, start_step: int = 0,
                 resume_time: float | None = None):
        from vitdata.io import atomic_write
        self.rank = rank
        self.path = os.path.join(out_dir, "log.jsonl")
        if rank == 0 and resume_time is not None and os.path.exists(self.path):
            with open(self.path) as fh:
                keep = [line for line in fh if _record_time(line) <= resume_time]
            atomic_write(self.path, "".join(keep).encode())
        self.file = open(self.path, "a") if rank == 0 else None
        self.tb = self.bar = None
        if rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(out_dir, "tb"))
            except Exception:  # tensorboard not installed
                self.tb = None
            if progress:
                tqdm = optional_import("tqdm")
                self.bar = (PlainProgress(total_steps, start_step) if tqdm is None else
                            tqdm.tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, file=sys.stderr))

    def write(self, kind: str, **rec):
        if self.file is None:
            return
        self.file.write(json.dumps({"kind": kind, **rec}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("step",):
                    self.tb.add_scalar(f"{kind}/{k}", v, rec.get("step", 0))

    def progress(self, n: int, **postfix):
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def message(self, text: str):
        if self.rank == 0:
            (self.bar.write if self.bar is not None else print)(text)

    def oracle(self, oracle, epoch: int, elapsed: float) -> None:
        """Write the oracle's metrics of ``epoch`` (DDP-e/h, KAR, period) once they exist."""
        if oracle is None or epoch < 0:
            return
        m = next((m for m in oracle.metrics if m.get("epoch") == epoch), None)
        if m is not None:
            self.write("epoch", epoch=epoch + 1, time=elapsed,
                       oracle={**{k: m.get(k) for k in ("ddp_e", "ddp_h", "kar", "period", "histogram")},
                               **{k: m[k] for k in ("strength", "mix_prob") if k in m}})

    def close(self):
        for h in (self.bar, self.tb, self.file):
            if h is not None:
                h.close()
