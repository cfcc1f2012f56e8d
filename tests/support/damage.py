"""Damage for the integrity tests: single-byte flips of a file's bytes, and a guard that fails any
unpickling while a load runs (pickle-free state, docs/reliability.md D3 and D4)."""
import pickle

import torch


class NoPickle:
    """Patch every unpickling entry point to raise while loads run (D4b)."""

    def __enter__(self):
        self.saved = (pickle.Unpickler, pickle.load, pickle.loads, torch.load)

        def boom(*a, **k):
            raise AssertionError("pickle was called while loading state")

        class Unpickler:
            def __init__(self, *a, **k):
                boom()

        pickle.Unpickler, pickle.load, pickle.loads, torch.load = Unpickler, boom, boom, boom
        return self

    def __exit__(self, *exc):
        pickle.Unpickler, pickle.load, pickle.loads, torch.load = self.saved


def flips(blob: bytes, n: int, rng) -> list[bytes]:
    out = []
    for _ in range(n):
        b = bytearray(blob)
        p = int(rng.integers(len(b)))
        b[p] ^= int(rng.integers(1, 256))
        out.append(bytes(b))
    return out
