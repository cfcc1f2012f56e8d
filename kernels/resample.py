"""EfficientTrain++'s low-resolution step: Pillow's antialiased Lanczos-3 resize of a batch.

What it computes
    ``lanczos_resize(x, (h, w))`` maps a batch ``x`` (B, C, H, W) to (B, C, h, w) with the separable
    resize of ``PIL.Image.resize(size, Image.LANCZOS)``: per axis a (n, N) matrix ``L``
    (:func:`kernels.lowpass.lanczos_matrix64`: output sample m centred at ``(m + 0.5) N / n``, the kernel
    ``sinc(t) sinc(t / 3)`` stretched by ``N / n`` when shrinking, rows normalised to 1), and
    ``Y = L_h X L_w^T``. EfficientTrain++ runs it on each image after the random-resized crop, flip and
    RandAugment at full size, before ToTensor / Normalize / RandomErasing (docs/methods.md §3.2); here it
    runs on the batch at the same point of the order, with the normalisation fused.

    Differences from Pillow on uint8 images: Pillow rounds and clips to 0..255 after each pass (horizontal,
    then vertical); this op keeps float precision and does not clip the kernel's overshoot (the Fourier
    crop does not clip either). On photos the result rounds to Pillow's within a level or two
    (``tests/kernels/test_resample.py`` pins it).

Implementations (the Fourier crop's, with ``L`` in place of its crop matrix and no Nyquist term)
    ``lanczos_resize_ref``     torch.matmul in float64 (any device), the ground truth.
    ``lanczos_resize``         the dispatcher, the ``vitdata::lanczos_resize`` torch.library op: on CPU the
                               chunked GEMMs of ``kernels/lowpass_cpu.py``, on CUDA the Triton kernel of
                               ``kernels/lowpass.py`` (the matmul form above 512 px input height).
"""
from __future__ import annotations

from typing import Optional

import torch

from .lowpass import (
    _KERNEL_IN,
    _KERNEL_OUT,
    MAX_KERNEL_HEIGHT,
    _check,
    _fake_out,
    _fmt,
    lowpass_crop_matmul,
    lowpass_crop_triton,
    triton,
)
from .lowpass_cpu import lowpass_crop_chunked


def lanczos_resize_ref(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None):
    """Ground truth in float64. Same signature and result as ``lanczos_resize``."""
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format)
    return lowpass_crop_matmul(x.to(torch.float64), (h, w), mean=mean, std=std, out_dtype=out_dtype,
                               memory_format=_fmt(cl), kind="lanczos")


@torch.library.custom_op("vitdata::lanczos_resize", mutates_args=())
def _lanczos_resize_op(x: torch.Tensor, h: int, w: int, mean: Optional[list[float]], std: Optional[list[float]],
                       out_dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    return lowpass_crop_matmul(x, (h, w), mean=mean, std=std, out_dtype=out_dtype, memory_format=_fmt(channels_last),
                               kind="lanczos")


@_lanczos_resize_op.register_kernel("cpu")
def _(x, h, w, mean, std, out_dtype, channels_last):
    return lowpass_crop_chunked(x, (h, w), mean=mean, std=std, out_dtype=out_dtype,
                                memory_format=_fmt(channels_last), kind="lanczos")


@_lanczos_resize_op.register_kernel("cuda")
def _(x, h, w, mean, std, out_dtype, channels_last):
    kw = dict(mean=mean, std=std, out_dtype=out_dtype, memory_format=_fmt(channels_last), kind="lanczos")
    if triton is None or x.shape[-2] > MAX_KERNEL_HEIGHT or x.dtype not in _KERNEL_IN or out_dtype not in _KERNEL_OUT:
        return lowpass_crop_matmul(x, (h, w), **kw)
    return lowpass_crop_triton(x, (h, w), **kw)


@_lanczos_resize_op.register_fake
def _(x, h, w, mean, std, out_dtype, channels_last):
    return _fake_out(x, h, w, out_dtype, channels_last)


def lanczos_resize(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None):
    """Pillow's Lanczos resize of a batch: (B, C, H, W) -> (B, C, h, w), each of h, w at most the input's.

    Arguments as ``lowpass_crop``: x uint8 / float (any strides); mean / std an optional per-channel
    normalisation ``(y - mean) / std`` in the units of x, fused; out_dtype default x's dtype (float32 for
    uint8); memory_format default that of x. Registered as ``torch.ops.vitdata.lanczos_resize``."""
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format)
    return torch.ops.vitdata.lanczos_resize(x, h, w, mean, std, out_dtype, cl)
