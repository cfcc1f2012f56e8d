"""The quarantine: sample ids whose header passes every check but whose coded data fails in the decoder.

DALI cannot skip a sample inside a running pipeline (NVIDIA/DALI#3913): one undecodable file fails the
whole step. vitdata handles it as *quarantine and redo* (``vitdata.loader.backends.dali_redo``):

1. the DALI step fails; the backend probes the sample DALI's message names (``Failed to decode sample
   #k``; each sample of the step when it names none, or when a guided try did not find them all) with a
   one-sample pipeline built around the same decoder kind as the graph (``cpu`` or ``mixed``, same decoder
   arguments; :func:`vitdata.pipelines.graphs.build_probe`), so what is quarantined is what actually failed
   on this machine's decoder (the GPU decoder may refuse files the CPU one accepts);
2. the failing ids go into the loader's :class:`Quarantine`, with the decoder's own words (captured
   from its stderr by :func:`capture_stderr`: DALI's exception text stops at "Critical error in
   pipeline");
3. the pipeline keeps running; the failed step alone is produced again by a copy of the graph restored
   from the random state before it, a quarantined id treated like a header-failed one (status
   ``decode_error``, substituted by the next usable id of the rank's epoch order,
   ``pipelines.source.resolve_sample``); later epochs skip it before reading. The batches are those of a
   loader that knew the file in advance, pixels included.

The torch backend finds the same failures itself (a Pillow error on full decode) and reports them here.

Ranks: a quarantine is rank-local state (each rank's ``state_dict`` carries its own, no collective).
A substitution happens at the failing sample's own position of its rank's order, so the other ranks'
orders, and every rank's step count, are unchanged; a rank that meets the same file in a later epoch
finds it the same way.

Later runs: what a quarantine finds is also kept beside the index (:class:`vitdata.data.badfiles.BadFiles`,
keyed by each file's identity), written every few seconds while files are found and at the end of an epoch,
at ``state_dict()`` and at ``close()``. A loader starts with the entries that still apply to its index, so a
fresh process, another rank or an evaluation loader of the same data skips those files before reading them,
and a resumed loader holds the union of its state's quarantine and the kept entries. A file known bad in
advance is substituted by the same rule at the same position as one found during the step, so the batches
are the same either way.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time

from vitdata.errors import REASONS, StateError


# Seconds between two writes of newly quarantined files to the store kept beside the index.
PERSIST_EVERY_S = 5.0


class Quarantine:
    """Ids refused by a decoder: ``id -> (reason, detail)``; ``ids()`` as a frozenset for the sources.

    ``store``: a :class:`vitdata.data.badfiles.BadFiles` (or None): where the entries are kept for later runs."""

    def __init__(self, store=None):
        self._entries: dict[int, dict] = {}
        self._frozen: frozenset[int] | None = frozenset()
        self._store, self._known, self._pending, self._written = store, [], [], time.monotonic()

    def load_known(self) -> int:
        """Add the store's entries that apply to this index (files refused by an earlier run); their count."""
        if self._store is None:
            return 0
        self._known = self._store.known()
        for e in self._known:
            self._entries.setdefault(e["id"], dict(e, epoch=None))
        self._frozen = None
        return len(self._known)

    def persist(self, force: bool = False) -> None:
        """Write the entries added since the last write to the store: now with ``force``, else when
        ``PERSIST_EVERY_S`` have passed (a file found twice in that window is written once)."""
        if not self._pending or (not force and time.monotonic() - self._written < PERSIST_EVERY_S):
            return
        pending, self._pending = self._pending, []
        self._store.add(pending)
        self._written = time.monotonic()

    def __contains__(self, sample_id) -> bool:
        return int(sample_id) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, sample_id: int, detail: str, *, path: str = "", reason: str = "decode_error",
            epoch: int | None = None) -> bool:
        """Quarantine ``sample_id``; False when it already was."""
        sid = int(sample_id)
        if sid in self._entries:
            return False
        self._entries[sid] = {"id": sid, "reason": reason, "path": path, "detail": detail, "epoch": epoch}
        self._frozen = None
        if self._store is not None:
            self._pending.append(self._entries[sid])
        return True

    def get(self, sample_id: int) -> dict | None:
        return self._entries.get(int(sample_id))

    def ids(self) -> frozenset[int]:
        if self._frozen is None:
            self._frozen = frozenset(self._entries)
        return self._frozen

    def state(self) -> list[dict]:
        """Plain data, by id."""
        return [dict(self._entries[k]) for k in sorted(self._entries)]

    def load(self, entries, num_samples: int) -> None:
        """Replace the quarantine by a :meth:`state` list, plus the store's entries (see the module docstring);
        StateError naming the field when it is malformed."""
        out = {}
        for i, e in enumerate(entries or []):
            try:
                sid, reason = int(e["id"]), str(e["reason"])
            except (KeyError, TypeError, ValueError) as err:
                raise StateError(f"loader state has a malformed quarantine entry (field quarantine[{i}]: "
                                 f"{str(e)[:80]})") from err
            if not 0 <= sid < num_samples or reason not in REASONS:
                raise StateError(f"loader state quarantines id {sid} with reason {reason!r}, outside this "
                                 f"dataset's {num_samples} ids or the reason codes (field quarantine[{i}])")
            out[sid] = {"id": sid, "reason": reason, "path": str(e.get("path", "")), "detail": str(e.get("detail", "")),
                        "epoch": e.get("epoch")}
        for e in self._known:
            out.setdefault(e["id"], dict(e, epoch=None))
        self._entries, self._frozen = out, None


@contextlib.contextmanager
def capture_stderr(out: list):
    """Collect what is written to file descriptor 2 (C libraries: libpng, libjpeg, nvImageCodec) while the
    block runs, append it to ``out`` as text, and write it through to the real stderr afterwards.

    Used on the error path only (the probe): other threads' stderr output in that window is caught too
    and passed through unchanged."""
    try:
        sys.stderr.flush()
    except Exception:
        pass
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except Exception:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            out.append(text)
            if text:
                os.write(2, text.encode("utf-8", "replace"))


def decoder_words(captured: str, exc: BaseException | None) -> str:
    """The decoder's own words for one failed sample: the captured stderr lines (``libpng error: ...``,
    ``Invalid component ID 9 in SOS``), else the exception's lines that are not DALI's generic frame."""
    lines = [ln.strip() for ln in captured.splitlines() if ln.strip()]
    if lines:
        return "; ".join(dict.fromkeys(lines))[:500]
    text = str(exc or "").strip().splitlines()
    generic = ("Critical error in pipeline", "Current pipeline object is no longer valid")
    said = [ln for ln in text if ln and not any(g in ln for g in generic)]
    return ("; ".join(said) or (type(exc).__name__ if exc is not None else "the decoder refused it"))[:500]
