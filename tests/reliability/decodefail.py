"""Files whose headers pass every check of ``vitdata.data.checks.check_bytes`` but whose coded data fails in
the decoder (docs/reliability.md I1): built from good self-identifying images by
:mod:`vitdata.bench.badcorpus`. A JPEG whose scan names a component its frame lacks is no longer one of them:
the JPEG walk refuses it from its headers (``tests/support/jpegfatal.py``). Nor, by default, are these PNGs:
the PNG data check refuses them (``tests/data/test_png_data.py``); the tests of the decoder's own failure
path (probe, quarantine, redo) turn it off with ``LoaderConfig(check_png_data=False)``, the stand-in for a
file no check foresees."""
from __future__ import annotations

from vitdata.bench import badcorpus

KINDS = ("png_bad_zlib", "png_bad_filter")


def kind_at(k: int) -> str:
    """The kind of the ``k``-th bad file of a corpus that cycles through :data:`KINDS`."""
    return KINDS[k % len(KINDS)]


def make(kind: str, sample_id: int = 0, label: int = 0, size: int = 32) -> bytes:
    """The bytes of one decoder-failing file of ``kind`` (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    return badcorpus.make(kind, sample_id, label, size)
