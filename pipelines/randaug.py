"""RandAugment with a per-sample magnitude and a per-step number of ops, from DALI's auto-augment pieces.

DALI's stock ``rand_augment(n, m)`` fixes ``m`` when the graph is built. Here ``m`` arrives per sample
from the external source (as a magnitude bin per op level), so the schedule and the difficulty oracle
change it without a rebuild. The graph always has ``max_ops`` levels; a level whose ``active`` flag is 0
selects the identity op, so the number of ops can change per step too.

This module must stay importable (not defined in ``__main__`` or a notebook): DALI's conditional
execution (``enable_conditionals=True``) rewrites the source of the functions that branch on data.
"""
from __future__ import annotations

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali.auto_aug import rand_augment as _ra
from nvidia.dali.auto_aug.core import augmentation, select, signed_bin

# timm's RandAugment translates by up to 0.45 of the image side at magnitude 10 (100 px at 224).
MAX_TRANSLATE_REL = 100 / 224


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)   # PIL's weights for the contrast centre


def _contrast_fused(data, parameter):
    """DALI's ``contrast`` with the centre (the luma-weighted mean, as PIL) passed to ``fn.contrast``.

    The stock op builds ``center + (data - center) * parameter`` as an arithmetic expression, which costs
    0.84 CPU-ms per 224 px image on CPU against 0.13 here, for bit-identical output. It needs the centre
    as a CPU argument input, so it serves CPU graphs only; GPU graphs keep the stock op."""
    mean = fn.reductions.mean(data, axis_names="HW")
    center = fn.reductions.sum(mean * types.Constant(_LUMA), axis_names="C")
    return fn.contrast(data, contrast=parameter, contrast_center=center)


def _auto_contrast_fused(data, _):
    """DALI's ``auto_contrast`` (per-channel stretch of [min, max] to [0, 255]) as one ``fn.normalize``.

    Bit-identical to the stock arithmetic form and 1.0 -> 0.66 CPU-ms per 224 px image; like
    :func:`_contrast_fused` it takes per-sample CPU arguments, so CPU graphs only."""
    lo = fn.reductions.min(data, axis_names="HW", keep_dims=True)
    hi = fn.reductions.max(data, axis_names="HW", keep_dims=True)
    diff = fn.cast(hi - lo, dtype=types.FLOAT)
    stretch = diff > 0
    return fn.normalize(data, mean=fn.cast(lo, dtype=types.FLOAT) * stretch,
                        stddev=diff * stretch + 255.0 * (stretch ^ True), axis_names="HW", scale=255.0,
                        dtype=types.UINT8)


def _solarize_fused(data, threshold):
    """DALI's ``solarize`` (``255 - v`` where ``v >= threshold``) as one arithmetic expression: for uint8
    ``255 - v`` is ``v ^ 255``, so ``v ^ ((v >= threshold) * 255)``. Bit-identical, and one fused
    operator instead of the stock form's chain of five; CPU graphs only, like the variants above."""
    return data ^ ((data >= threshold) * types.Constant(255, dtype=types.UINT8))


def _rotate_warp(data, angle, fill_value=128, interp_type=None, rotate_keep_size=True):
    """DALI's ``rotate`` (``keep_size``: the output has the input's size) as ``warp_affine`` given the
    output -> input map, the rotation by ``angle`` about the centre (W/2, H/2). Bit-identical on CPU and
    about half the cost (``fn.rotate`` derives the map and output size per sample itself); CPU graphs only."""
    if not rotate_keep_size:
        return fn.rotate(data, angle=angle, fill_value=fill_value, interp_type=interp_type, keep_size=False)
    hw = fn.cast(data.shape()[0:2], dtype=types.FLOAT)
    centre = fn.cat(hw[1:2], hw[0:1]) * 0.5
    return fn.warp_affine(data, matrix=fn.transforms.rotation(angle=angle, center=centre), fill_value=fill_value,
                          interp_type=interp_type, inverse_map=True)


_CPU_VARIANTS = {"contrast": _contrast_fused, "auto_contrast": _auto_contrast_fused, "solarize": _solarize_fused,
                 "rotate": _rotate_warp}


def _equalize(data, _):
    """DALI's ``equalize`` through the regular operator (the suite calls the deprecated experimental alias)."""
    return fn.equalize(data)


def _sharpness(data, kernel):
    """DALI's ``sharpness`` through the regular ``fn.filter`` (the suite calls the experimental alias)."""
    return fn.filter(data, kernel)


# Every device: the same ops, minus the DeprecationWarning each graph build printed.
_VARIANTS = {"equalize": _equalize, "sharpness": _sharpness}


def suite(exclude: tuple[str, ...] = (), device: str = "gpu") -> list:
    """The RandAugment op list (DALI's monotonic suite: larger bin = stronger), minus ``exclude``.

    ``device="cpu"`` swaps in cheaper forms of ``contrast``, ``auto_contrast``, ``solarize`` and ``rotate``
    (same output on CPU; see :func:`_contrast_fused` and the functions after it)."""
    ops = _ra.get_rand_augment_suite(use_shape=True, max_translate_rel=MAX_TRANSLATE_REL)
    variants = dict(_VARIANTS, **(_CPU_VARIANTS if device == "cpu" else {}))
    ops = [augmentation(variants[op.name], mag_range=op.mag_range, randomly_negate=op.randomly_negate,
                        mag_to_param=op.mag_to_param, param_device=op.param_device, name=op.name)
           if op.name in variants else op for op in ops]
    names = {op.name for op in ops}
    unknown = set(exclude) - names
    if unknown:
        raise ValueError(f"unknown RandAugment ops {sorted(unknown)}; known: {sorted(names)}")
    ops = [op for op in ops if op.name not in exclude]
    if not any(op.name == "identity" for op in ops):
        raise ValueError("the identity op cannot be excluded: inactive op levels select it")
    return ops


def apply(images, mag_bin, active, shape, *, max_ops: int, num_bins: int, exclude: tuple[str, ...] = (),
          fill_value: int = 128, seed: int = -1, interp_type=types.INTERP_NN):
    """Apply up to ``max_ops`` random ops to HWC uint8 ``images``.

    ``mag_bin``: int32 (max_ops,) per sample; ``active``: int32 (max_ops,) per sample;
    ``shape``: (H, W) per sample, the image size after resize (translations scale with it);
    ``interp_type``: resampling of the geometric ops (rotate, shear, translate).
    """
    return _apply(images, mag_bin, active, shape, max_ops=max_ops, num_bins=num_bins, exclude=exclude,
                  fill_value=fill_value, seed=seed, interp_type=interp_type)


def _apply(images, mag_bin, active, shape, *, max_ops, num_bins, exclude, fill_value, seed, interp_type):
    ops = suite(exclude, device=images.device or "cpu")
    identity = next(i for i, op in enumerate(ops) if op.name == "identity")
    op_idx = fn.random.uniform(values=list(range(len(ops))), shape=(max_ops,), dtype=types.INT32, seed=seed)
    op_idx = op_idx * active + identity * (1 - active)
    signed = signed_bin(mag_bin, seed=seed, shape=(max_ops,))
    for level in range(max_ops):
        images = select(ops, op_idx[level], data=images, magnitude_bin=signed[level], num_magnitude_bins=num_bins,
                        shape=shape, fill_value=fill_value, interp_type=interp_type)
    return images
