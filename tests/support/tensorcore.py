"""The low-pass crop kernel's tensor-core arithmetic (kernels/lowpass.py on CUDA), emulated on a CPU.

Triton's interpreter ignores ``tl.dot``'s ``input_precision``: on a CPU every dot is a float32 product, so no
CPU test sees what the tensor cores do to the operands. ``emulate_lowpass_crop`` replays the kernel's
arithmetic with torch, on any device, with the operands rounded the way a GPU rounds them:

- ``tf32`` (the kernel's precision for bfloat16 outputs): each fp32 operand is read by the tensor core as
  TF32 (10 explicit mantissa bits, fp32's exponent). How the hardware rounds a plain fp32 register is not
  specified by the PTX ISA, so two modes are offered: ``"rz"`` drops the 13 low bits (truncation, what
  the hardware is reported to do), ``"rna"`` rounds to nearest with ties away from zero (``cvt.rna.tf32.f32``).
- ``tf32x3`` (float32 and float16 outputs): Triton's F32DotTC pass splits each operand ``a`` into
  ``big = cvt.rna.tf32(a)`` and ``small = a - big`` (exact in fp32) and computes ``dot(small, b_big)``, then
  ``dot(big, b_small)``, then ``dot(big, b_big)``, each a TF32 dot accumulating into the last (``small`` is
  read by the tensor core as above); ``small x small`` is dropped.
- ``ieee``: fp32 operands as they are (what the interpreter computes), to check the emulation's structure
  against the real kernel on a CPU.

Inside one MMA instruction (k = 8 for TF32) products are exact and summed in float64 here; the accumulator
is rounded to fp32 after every 8-term step. Stage 1 is ``T = X Ar_w^T`` over the input columns (chunks of
BLOCK_K accumulated in order), stage 2 ``Y = Ar_h T`` with T as an operand (rounded again); the Nyquist sum
``s = v_h^T X v_w``, the normalisation and the output cast (round to nearest even) run in fp32 as the
kernel's CUDA-core code does.
"""
from __future__ import annotations

import importlib

import torch

MMA_K = 8          # K of one TF32 MMA step (mma.sync m16n8k8 and wgmma k8): the accumulator is fp32 after each
TF32_DROPPED_BITS = 13   # fp32 has 23 explicit mantissa bits, TF32 10


def to_tf32(x: torch.Tensor, mode: str) -> torch.Tensor:
    """float32 -> the float32 value a tensor core reads as TF32 (``mode`` "rz" or "rna")."""
    bits = x.contiguous().view(torch.int32)
    if mode == "rna":
        # adding half a TF32 ulp to the magnitude bits (the sign bit is apart) rounds halves away from zero
        bits = bits + (1 << (TF32_DROPPED_BITS - 1))
    elif mode != "rz":
        raise ValueError(f"mode must be 'rz' or 'rna', got {mode!r}")
    return (bits & -(1 << TF32_DROPPED_BITS)).view(torch.float32)


def _mma(a: torch.Tensor, b: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
    """acc + a @ b (a (..., M, K), b (..., K, N), broadcast), MMA_K terms at a time into an fp32 accumulator."""
    a64, b64 = a.double(), b.double()
    for k0 in range(0, a.shape[-1], MMA_K):
        acc = (acc.double() + a64[..., k0:k0 + MMA_K] @ b64[..., k0:k0 + MMA_K, :]).float()
    return acc


def tc_dot(a: torch.Tensor, b: torch.Tensor, acc: torch.Tensor, precision: str, mode: str) -> torch.Tensor:
    """``tl.dot(a, b, acc, input_precision=precision)`` on fp32 tensors (a (..., M, K), b (..., K, N))."""
    if precision == "ieee":
        return _mma(a, b, acc)
    if precision == "tf32":
        return _mma(to_tf32(a, mode), to_tf32(b, mode), acc)
    if precision != "tf32x3":
        raise ValueError(f"precision must be tf32, tf32x3 or ieee, got {precision!r}")
    a_big, b_big = to_tf32(a, "rna"), to_tf32(b, "rna")
    a_small, b_small = to_tf32(a - a_big, mode), to_tf32(b - b_big, mode)
    acc = _mma(a_small, b_big, acc)
    acc = _mma(a_big, b_small, acc)
    return _mma(a_big, b_big, acc)


def kernel_precision(out_dtype: torch.dtype) -> str:
    """The ``input_precision`` the launcher picks for an output dtype."""
    return "tf32" if out_dtype == torch.bfloat16 else "tf32x3"


def emulate_lowpass_crop(x: torch.Tensor, size, *, out_dtype: torch.dtype, precision: str, mode: str = "rz",
                         block_k: int = 32, mean=None, std=None) -> torch.Tensor:
    """The Triton kernel's result for ``x`` (B, C, H, W) -> (B, C, h, w) in ``out_dtype``, arithmetic as on
    a GPU at ``precision`` (see the module docstring); ``block_k``: the launch config's BLOCK_K."""
    lp = importlib.import_module("vitdata.kernels.lowpass")
    h, w = lp._pair(size)
    H, W = x.shape[-2:]
    ar_h, _, v_h = lp._axis_factors(H, h, torch.float32, x.device)
    _, art_w, v_w = lp._axis_factors(W, w, torch.float32, x.device)
    xf = x.to(torch.float32)
    t = torch.zeros((*x.shape[:2], H, w), dtype=torch.float32, device=x.device)
    s_rows = torch.zeros(x.shape[:3], dtype=torch.float32, device=x.device)
    for k0 in range(0, W, block_k):
        xk = xf[..., k0:k0 + block_k]
        t = tc_dot(xk, art_w[k0:k0 + block_k], t, precision, mode)
        if v_h is not None and v_w is not None:
            s_rows = s_rows + (xk * v_w[k0:k0 + block_k]).sum(-1)
    y = tc_dot(ar_h, t, torch.zeros((*x.shape[:2], h, w), dtype=torch.float32, device=x.device), precision, mode)
    if v_h is not None and v_w is not None:
        s = (s_rows * v_h).sum(-1)
        y = y - s[..., None, None] * lp._checkerboard(h, w, torch.float32, x.device)
    if mean is not None:
        mu = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        rstd = (1.0 / torch.tensor(std, dtype=torch.float64)).float().to(x.device).view(1, -1, 1, 1)
        y = (y - mu) * rstd
    return y.to(out_dtype)



def launch_block_k(x: torch.Tensor, out_dtype: torch.dtype) -> int:
    """BLOCK_K of the CUDA launch configs for ``x`` (one per autotune list, whichever config wins)."""
    lp = importlib.import_module("vitdata.kernels.lowpass")
    return lp._gpu_configs(kernel_precision(out_dtype), lp._next_pow2(x.shape[-2]))[0][2]


def tensor_core_error(x: torch.Tensor, size, exact: torch.Tensor, *, out_dtype: torch.dtype, mean=None,
                      std=None) -> float:
    """The largest |error| against ``exact`` of the kernel's arithmetic alone (output kept in fp32) at the
    precision and BLOCK_K the CUDA launcher picks for ``out_dtype``: the worse of the two TF32 rounding modes."""
    precision, block_k = kernel_precision(out_dtype), launch_block_k(x, out_dtype)
    return max((emulate_lowpass_crop(x, size, out_dtype=torch.float32, precision=precision, mode=mode,
                                     block_k=block_k, mean=mean, std=std).double() - exact).abs().max().item()
               for mode in ("rz", "rna"))
