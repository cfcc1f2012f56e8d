"""RandAugment with a per-sample magnitude and a per-step number of ops, from DALI's auto-augment pieces.

DALI's stock ``rand_augment(n, m)`` fixes ``m`` when the graph is built. Here ``m`` arrives per sample
from the external source (as a magnitude bin per op level), so the schedule and the difficulty oracle
change it without a rebuild. The graph always has ``max_ops`` levels; a level whose ``active`` flag is 0
selects the identity op, so the number of ops can change per step too.

This module must stay importable (not defined in ``__main__`` or a notebook): DALI's conditional
execution (``enable_conditionals=True``) rewrites the source of the functions that branch on data.
"""
from __future__ import annotations

import warnings

from nvidia.dali import fn, types
from nvidia.dali.auto_aug import rand_augment as _ra
from nvidia.dali.auto_aug.core import select, signed_bin

# timm's RandAugment translates by up to 0.45 of the image side at magnitude 10 (100 px at 224).
MAX_TRANSLATE_REL = 100 / 224


def suite(exclude: tuple[str, ...] = ()) -> list:
    """The RandAugment op list (DALI's monotonic suite: larger bin = stronger), minus ``exclude``."""
    ops = _ra.get_rand_augment_suite(use_shape=True, max_translate_rel=MAX_TRANSLATE_REL)
    names = {op.name for op in ops}
    unknown = set(exclude) - names
    if unknown:
        raise ValueError(f"unknown RandAugment ops {sorted(unknown)}; known: {sorted(names)}")
    ops = [op for op in ops if op.name not in exclude]
    if not any(op.name == "identity" for op in ops):
        raise ValueError("the identity op cannot be excluded: inactive op levels select it")
    return ops


def apply(images, mag_bin, active, shape, *, max_ops: int, num_bins: int, exclude: tuple[str, ...] = (),
          fill_value: int = 128, seed: int = -1):
    """Apply up to ``max_ops`` random ops to HWC uint8 ``images``.

    ``mag_bin``: int32 (max_ops,) per sample; ``active``: int32 (max_ops,) per sample;
    ``shape``: (H, W) per sample, the image size after resize (translations scale with it).
    """
    with warnings.catch_warnings():
        # DALI's suite still calls fn.experimental.{equalize,filter} aliases, which warn at build time.
        warnings.filterwarnings("ignore", message=r"(?s).*fn\.experimental\..*deprecated", category=DeprecationWarning)
        return _apply(images, mag_bin, active, shape, max_ops=max_ops, num_bins=num_bins, exclude=exclude,
                      fill_value=fill_value, seed=seed)


def _apply(images, mag_bin, active, shape, *, max_ops, num_bins, exclude, fill_value, seed):
    ops = suite(exclude)
    identity = next(i for i, op in enumerate(ops) if op.name == "identity")
    op_idx = fn.random.uniform(values=list(range(len(ops))), shape=(max_ops,), dtype=types.INT32, seed=seed)
    op_idx = op_idx * active + identity * (1 - active)
    signed = signed_bin(mag_bin, seed=seed, shape=(max_ops,))
    for level in range(max_ops):
        images = select(ops, op_idx[level], data=images, magnitude_bin=signed[level], num_magnitude_bins=num_bins,
                        shape=shape, fill_value=fill_value, interp_type=types.INTERP_LINEAR)
    return images
