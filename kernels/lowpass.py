"""EfficientTrain's low-frequency crop (``freq_crop``) and the matching fixed-size low-pass filter.

What it computes
    ``lowpass_crop(x, (h, w))`` maps a batch ``x`` (B, C, H, W) to (B, C, h, w): take the 2-D DFT of each
    channel, shift it so DC is in the middle, keep the centred h x w window (starting at row
    ``H//2 - h//2`` and column ``W//2 - w//2``, where DC lands), shift back, inverse DFT, keep the real
    part and multiply by ``(h/H) * (w/W)`` so that the mean (DC) is preserved: a constant image stays
    the same constant. Kept frequencies per axis are ``k = -(n//2) ... n - n//2 - 1`` for output length
    n, so an even output keeps the unpaired Nyquist bin ``-n/2`` and an odd one is symmetric. No clamp,
    no rounding. This is exactly EfficientTrain's ``freq_crop`` (four corner blocks of the unshifted
    spectrum, docs/methods.md §3.1), extended to odd and non-square sizes.

    ``lowpass_filter(x, (h, w))`` keeps (B, C, H, W) and zeroes every frequency outside the same window
    (what the model sees, at the original resolution; for models that need a fixed input size).

Matrix form (the fast path)
    The operation is linear and separable. Per axis with input length N and output length n,
    ``A[m, j] = (1/N) sum_k exp(2 pi i k (m/n - j/N))`` over the kept k, and ``Y = Re(A_h X A_w^T)
    = Ar_h X Ar_w^T - Ai_h X Ai_w^T``. For odd n, ``Ai = 0``. For even n, ``Ai[m, j] = (-1)^m v[j]``
    with ``v[j] = sin(pi n j / N) / N`` (rank 1: only the unpaired Nyquist bin is not cancelled by its
    mirror), so the second term is the scalar ``s = v_h^T X v_w`` times the checkerboard
    ``(-1)^(m + j)``: one weighted sum over the channel instead of two more matrix products.
    Both are exact (fp64: 1e-13 against the FFT). Matrices are cached per (N, n, dtype, device).

    The filter is ``F = (1/N) sum_k exp(2 pi i k (m - j)/N)`` over the same k, which equals
    ``(N/n) A^H A`` (crop, then band-limited zero-padded interpolation back to N); for odd n it is
    the real projection ``(N/n) Ar^T Ar``. For even n its imaginary part has rank 2, so
    ``lowpass_filter`` uses the plain four-product form ``Fr X Fr^T - Fi X Fi^T`` (torch.matmul on any
    device); it is a visualisation / fixed-size helper, not a hot-path op.

Implementations
    ``lowpass_crop_ref``     torch.fft in float64, the ground truth (any device).
    ``lowpass_crop_matmul``  the matrix form with torch.matmul in float32 (float64 for float64 input).
    ``lowpass_crop_triton``  the matrix form as one Triton kernel: per (image, channel, block of output
                             columns) it computes ``T = X Ar_w^T[:, cols]`` over the whole input height
                             (tl.dot, K-loop over input columns), accumulates the Nyquist sum ``s`` on
                             the way, then for each block of output rows ``Y = Ar_h T - s (-1)^(m+j)``;
                             the input cast (uint8 / fp16 / bf16 / fp32 -> fp32), the optional
                             per-channel normalisation ``(y - mean) / std`` and the output dtype and
                             layout (strides) are fused. ``tl.dot`` runs as TF32 for bf16 outputs and as
                             TF32x3 (about fp32 accuracy) for fp16 / fp32 outputs. Input height up to
                             512 (the whole padded column of T lives in registers). On CUDA the block
                             sizes, warps and pipeline stages are autotuned per shape among a short list
                             (``_GPU_CONFIGS``, below) whose members share one reduction order and one
                             MMA family (stage 2 as mma.sync on sm_90: BLOCK_M <= 32), so the tuner's
                             pick cannot change the bits.
    ``lowpass_crop``         the dispatcher (also the ``vitdata::lowpass_crop`` torch.library op).

Dispatch default
    CPU tensors: ``lowpass_crop_chunked`` (``kernels/lowpass_cpu.py``: FFT or GEMMs per shape, one cache-
    sized chunk at a time, registered there as the op's CPU kernel). The matmul form over a whole batch
    is the op's default for other devices and the CPU benchmark's baseline.
    CUDA tensors: ``lowpass_crop_triton`` (falls back to the matmul form for input heights > 512).
    GPU timings: not yet measured on GPU (no device has been lent yet); the choice of the Triton kernel
    as the CUDA default is provisional until ``benchmarks/bench_kernels.py`` has run on one.

Checked for the GPU, without one
    ``tests/kernels/test_compile_sm90.py`` compiles the kernel for sm_90 (H100) through Triton's passes
    and its bundled ptxas, with the arguments the launcher passes: uint8 / fp16 / bf16 / fp32 in, fp32 /
    fp16 / bf16 out, NCHW, channels_last and offset views, 224 -> 160, 223 -> 161, 64 -> 33, 512 -> 320,
    and inputs 32 px high and below (32 -> 16, 32 -> 17, 17x23 -> 9x11, 16 -> 8: BLOCK_H 16 and 32, where
    stage 1 is mma.sync too, 47-128 registers, at most 16 KB of shared memory), every autotuner candidate. At 224 -> 160 (BLOCK_H 256, 8 warps, 2 stages): bf16 out (tf32 dots)
    124-163 registers NCHW, 232-255 channels_last (strided scalar loads and stores), 66-164 KB of shared
    memory; fp32 / fp16 out (tf32x3) 226-246 registers, 96-160 KB; no spills anywhere. The one config
    that spills is tf32x3 at BLOCK_H 512 (940 bytes per thread; no spill-free config was found there).
    Every config fits the 227 KB an H100 block may use. The CUDA defaults before this check (BLOCK_M 64,
    Triton's 3 stages) needed 228 KB (bf16 out) or 256 KB (fp32 / fp16 out) at 224 and 452-512 KB at
    512: every launch at those sizes would have failed. With tf32x3 they also spilled about 400 bytes.
    Which candidate is fastest, and the kernel's speed at all, still needs a GPU.

Bytes moved per element
    Kernel: reads each input element once from DRAM (other column-block programs of the same channel
    re-read it from L2) and writes each output element once: ``B*C*(H*W*in_bytes + h*w*out_bytes)``,
    e.g. 256x3x224x224 bf16 -> 160 bf16 = 77 MB + 39 MB. Matrices (< 0.5 MB) stay in L2.
    L2 traffic is larger: each of the ``ceil(w / BLOCK_N)`` programs of a channel reads the channel and
    all of Ar_h (``h*H*4`` bytes). At 224 -> 160 bf16 that is 1.05 GB per 256-image batch with BLOCK_N
    32 and 0.67 GB with 64 (9x and 6x the DRAM traffic), which is why BLOCK_N is among the tuned values.
    Normalisation: ``mean`` / ``std`` are per channel in the units of ``x`` (e.g. 0..255 for uint8);
    because the crop is linear and keeps the mean, normalising before or after is the same up to
    rounding.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Union

import torch

try:  # Triton is optional at import time: `import vitdata.kernels` must work without a GPU or Triton.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - platforms without a Triton wheel
    triton = None
    tl = None

Size = Union[int, Sequence[int]]
_FLOAT_OUT = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_IN_DTYPES = (torch.uint8, torch.float32, torch.float16, torch.bfloat16, torch.float64)
_KERNEL_IN = (torch.uint8, torch.float32, torch.float16, torch.bfloat16)
_KERNEL_OUT = (torch.float32, torch.float16, torch.bfloat16)
MAX_KERNEL_HEIGHT = 512


# --------------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _lowpass_crop_kernel(
        x_ptr, y_ptr, ah_ptr, awt_ptr, vh_ptr, vw_ptr, mean_ptr, rstd_ptr,
        C, H, W, h, w,
        sxb, sxc, sxh, sxw,
        syb, syc, syh, syw,
        HAS_NYQUIST: tl.constexpr, NORMALIZE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
        BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        # One program: one (image, channel) and one block of BLOCK_N output columns. Programs of the
        # same channel are adjacent in launch order so the channel is read from DRAM once, then L2.
        pid = tl.program_id(0)
        n_col_blocks = tl.cdiv(w, BLOCK_N)  # in the kernel, so the autotuner may change BLOCK_N
        bc = pid // n_col_blocks
        jb = pid % n_col_blocks
        b = bc // C
        c = bc % C
        rows = tl.arange(0, BLOCK_H)
        cols = jb * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < H
        col_ok = cols < w
        x_base = x_ptr + b.to(tl.int64) * sxb + c.to(tl.int64) * sxc

        # Stage 1: T = X @ Ar_w^T[:, cols] over the full (padded) input height.
        t = tl.zeros((BLOCK_H, BLOCK_N), dtype=tl.float32)
        s_rows = tl.zeros((BLOCK_H,), dtype=tl.float32)
        for k0 in range(0, W, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < W
            xk = tl.load(x_base + rows[:, None] * sxh + ks[None, :] * sxw,
                         mask=row_ok[:, None] & k_ok[None, :], other=0).to(tl.float32)
            a = tl.load(awt_ptr + ks[:, None] * w + cols[None, :],
                        mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            t = tl.dot(xk, a, t, input_precision=INPUT_PRECISION)
            if HAS_NYQUIST:
                vw = tl.load(vw_ptr + ks, mask=k_ok, other=0.0)
                s_rows += tl.sum(xk * vw[None, :], axis=1)
        if HAS_NYQUIST:
            vh = tl.load(vh_ptr + rows, mask=row_ok, other=0.0)
            s = tl.sum(s_rows * vh, axis=0)
        if NORMALIZE:
            mu = tl.load(mean_ptr + c)
            rstd = tl.load(rstd_ptr + c)

        # Stage 2: Y[rows m, cols] = Ar_h[m, :] @ T - s (-1)^(m + j).
        y_base = y_ptr + b.to(tl.int64) * syb + c.to(tl.int64) * syc
        for m0 in range(0, h, BLOCK_M):
            ms = m0 + tl.arange(0, BLOCK_M)
            m_ok = ms < h
            a2 = tl.load(ah_ptr + ms[:, None] * H + rows[None, :],
                         mask=m_ok[:, None] & row_ok[None, :], other=0.0)
            y = tl.dot(a2, t, input_precision=INPUT_PRECISION)
            if HAS_NYQUIST:
                parity = (ms[:, None] + cols[None, :]) & 1
                y -= s * (1.0 - 2.0 * parity.to(tl.float32))
            if NORMALIZE:
                y = (y - mu) * rstd
            tl.store(y_base + ms[:, None] * syh + cols[None, :] * syw,
                     y.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & col_ok[None, :])


# --------------------------------------------------------------------------------------------------
# Matrices
# --------------------------------------------------------------------------------------------------
def _kept_freqs(n: int) -> torch.Tensor:
    return torch.arange(-(n // 2), n - n // 2, dtype=torch.int64)


@functools.lru_cache(maxsize=32)
def _crop_matrix64(N: int, n: int) -> torch.Tensor:
    """Complex128 (n, N) matrix A of the per-axis crop (CPU); phases reduced mod the period in integers."""
    k = _kept_freqs(n)
    m = torch.arange(n, dtype=torch.int64)
    j = torch.arange(N, dtype=torch.int64)
    inv = torch.exp(2j * math.pi * ((m[:, None] * k[None, :]) % n).double() / n)    # (n, K)
    fwd = torch.exp(-2j * math.pi * ((k[:, None] * j[None, :]) % N).double() / N)   # (K, N)
    return (inv @ fwd) / N


@functools.lru_cache(maxsize=32)
def _filter_matrix64(N: int, n: int) -> torch.Tensor:
    """Complex128 (N, N) matrix F = (1/N) sum_k exp(2 pi i k (m - j) / N) of the per-axis filter."""
    k = _kept_freqs(n)
    d = torch.arange(N, dtype=torch.int64)
    diff = d[:, None] - d[None, :]
    phase = (k[:, None, None] * diff[None]) % N
    return torch.exp(2j * math.pi * phase.double() / N).sum(0) / N


def crop_matrices(N: int, n: int, dtype: torch.dtype = torch.float64, device=None):
    """(Ar, Ai) of shape (n, N) for one axis, so that ``Y = Ar_h X Ar_w^T - Ai_h X Ai_w^T``."""
    A = _crop_matrix64(int(N), int(n))
    return A.real.to(dtype=dtype, device=device), A.imag.to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=32)
def lanczos_matrix64(N: int, n: int) -> torch.Tensor:
    """Float64 (n, N) matrix L of Pillow's antialiased Lanczos-3 resize of one axis from N to n samples
    (``Image.resize(..., LANCZOS)``): output m is centred at ``(m + 0.5) N / n`` in input coordinates, the
    kernel ``sinc(t) sinc(t / 3)`` on ``|t| < 3`` is stretched by ``N / n`` when shrinking (the antialiasing),
    and each row is normalised to sum 1, so a constant image stays the same constant."""
    scale = N / n
    stretch = max(scale, 1.0)
    L = torch.zeros((n, N), dtype=torch.float64)
    for m in range(n):
        centre = (m + 0.5) * scale
        lo = max(int(centre - 3.0 * stretch + 0.5), 0)
        hi = min(int(centre + 3.0 * stretch + 0.5), N)
        t = (torch.arange(lo, hi, dtype=torch.float64) + 0.5 - centre) / stretch
        w = torch.where(t.abs() < 3.0, torch.sinc(t) * torch.sinc(t / 3.0), torch.zeros_like(t))
        L[m, lo:hi] = w / w.sum()
    return L


@functools.lru_cache(maxsize=64)
def _axis_factors(N: int, n: int, dtype: torch.dtype, device: torch.device, kind: str = "fourier"):
    """Ar (n, N), Ar^T contiguous (N, n), Nyquist vector v (N,) or None (odd n or n == N). ``kind``
    "lanczos": Pillow's Lanczos resize matrix (:func:`lanczos_matrix64`) in place of Ar, no Nyquist term."""
    if kind == "lanczos":
        L = lanczos_matrix64(N, n)
        return L.to(dtype=dtype, device=device).contiguous(), L.t().to(dtype=dtype, device=device).contiguous(), None
    if kind != "fourier":
        raise ValueError(f"kind must be 'fourier' or 'lanczos', got {kind!r}")
    A = _crop_matrix64(N, n)
    ar = A.real.to(dtype=dtype, device=device).contiguous()
    art = A.real.t().to(dtype=dtype, device=device).contiguous()
    v = None
    if n % 2 == 0 and n < N:
        v = (torch.sin(math.pi * n * torch.arange(N, dtype=torch.float64) / N) / N).to(dtype=dtype, device=device)
    return ar, art, v


def _checkerboard(h: int, w: int, dtype, device) -> torch.Tensor:
    i = torch.arange(h, device=device)[:, None] + torch.arange(w, device=device)[None, :]
    return (1 - 2 * (i % 2)).to(dtype)


# --------------------------------------------------------------------------------------------------
# Argument handling shared by every implementation
# --------------------------------------------------------------------------------------------------
def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (h, w), got {size!r}")
    return size


def _check(x: torch.Tensor, size: Size, mean, std, out_dtype, memory_format, dtypes=_IN_DTYPES):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if x.dtype not in dtypes:
        raise ValueError(f"x dtype {x.dtype} not supported (use one of {', '.join(map(str, dtypes))})")
    B, C, H, W = x.shape
    h, w = _pair(size)
    if not (1 <= h <= H and 1 <= w <= W):
        raise ValueError(f"size {(h, w)} must be between 1 and the input size {(H, W)}")
    if out_dtype is None:
        out_dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    if out_dtype not in _FLOAT_OUT:
        raise ValueError(f"out_dtype {out_dtype} not supported (use float32, float16, bfloat16 or float64)")
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together")
    if mean is not None:
        mean = [float(v) for v in (mean.tolist() if isinstance(mean, torch.Tensor) else mean)]
        std = [float(v) for v in (std.tolist() if isinstance(std, torch.Tensor) else std)]
        if len(mean) == 1:
            mean, std = mean * C, std * C
        if len(mean) != C or len(std) != C:
            raise ValueError(f"mean and std need {C} values (one per channel), got {len(mean)} and {len(std)}")
        if any(s == 0 for s in std):
            raise ValueError("std must be non-zero")
    return (h, w), mean, std, out_dtype, _channels_last(x, memory_format)


def _channels_last(x: torch.Tensor, memory_format) -> bool:
    if memory_format is None or memory_format == torch.preserve_format:
        return (not x.is_contiguous()) and x.is_contiguous(memory_format=torch.channels_last)
    if memory_format == torch.channels_last:
        return True
    if memory_format == torch.contiguous_format:
        return False
    raise ValueError(f"memory_format must be None, torch.contiguous_format or torch.channels_last, got {memory_format}")


def _finish(y: torch.Tensor, mean, std, out_dtype, channels_last: bool) -> torch.Tensor:
    if mean is not None:
        m = torch.tensor(mean, dtype=y.dtype, device=y.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=y.dtype, device=y.device).view(1, -1, 1, 1)
        y = (y - m) / s
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return y.to(dtype=out_dtype, memory_format=fmt)


# --------------------------------------------------------------------------------------------------
# Reference and the matmul form
# --------------------------------------------------------------------------------------------------
def _crop_fft(x: torch.Tensor, h: int, w: int, compute_dtype: torch.dtype) -> torch.Tensor:
    H, W = x.shape[-2:]
    f = torch.fft.fftshift(torch.fft.fft2(x.to(compute_dtype)), dim=(-2, -1))
    r0, c0 = H // 2 - h // 2, W // 2 - w // 2  # where DC sits after the shift; (H - h)//2 is wrong for odd h
    f = torch.fft.ifftshift(f[..., r0:r0 + h, c0:c0 + w], dim=(-2, -1))
    return torch.fft.ifft2(f).real * ((h / H) * (w / W))


def lowpass_crop_ref(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None):
    """Ground truth with torch.fft in float64 (any device). Same signature and result as ``lowpass_crop``."""
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format)
    return _finish(_crop_fft(x, h, w, torch.float64), mean, std, out_dtype, cl)


def lowpass_crop_fft(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None):
    """The torch.fft path in float32 (what EfficientTrain runs on the GPU); the benchmark baseline."""
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format)
    return _finish(_crop_fft(x, h, w, torch.float32), mean, std, out_dtype, cl)


def lowpass_crop_matmul(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None, kind="fourier"):
    """The matrix form with torch.matmul: ``Ar_h X Ar_w^T - s (-1)^(m+j)``, computed in float32
    (float64 for float64 input); two batched GEMMs plus one weighted reduction for even sizes. ``kind``
    "lanczos": Pillow's Lanczos resize instead (``L_h X L_w^T``, see ``kernels.resample``)."""
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format)
    H, W = x.shape[-2:]
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(cdt)
    ar_h, _, v_h = _axis_factors(H, h, cdt, x.device, kind)
    _, art_w, v_w = _axis_factors(W, w, cdt, x.device, kind)
    y = torch.matmul(ar_h, torch.matmul(xf, art_w))
    if v_h is not None and v_w is not None:
        s = torch.einsum("bchw,h,w->bc", xf, v_h, v_w)
        y = y - s[:, :, None, None] * _checkerboard(h, w, cdt, x.device)
    return _finish(y, mean, std, out_dtype, cl)


# --------------------------------------------------------------------------------------------------
# Triton launcher
# --------------------------------------------------------------------------------------------------
def _next_pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << (int(n) - 1).bit_length())


# GPU launch configurations: (BLOCK_N, BLOCK_M, BLOCK_K, num_warps, num_stages) per (tl.dot input precision,
# largest BLOCK_H). The first of each list is the default; on the first call of a shape the autotuner times
# the list and keeps the fastest. Chosen from sm_90 compile metadata (registers, spills, shared memory;
# tests/kernels/test_compile_sm90.py prints them), not from timings:
# - Triton's default num_stages=3 triple-buffers the Ar_h tile of stage 2: 228 KB (tf32) or 256 KB
#   (tf32x3) of shared memory at BLOCK_H 256, BLOCK_M 64, over the 227 KB an H100 block may use, so
#   those launches would fail. Two stages keep every listed config at or below 192 KB.
# - tf32x3 (float32 / float16 outputs) splits both operands into two tf32 halves held in registers: at
#   BLOCK_H 256 every config with BLOCK_M >= 32 spills (120-1000 bytes per thread at 8 warps, more at 4
#   or 16), and so does BLOCK_N 16; BLOCK_M 16 with BLOCK_N 32 or 64 compiles to about 230 registers
#   without spills (BLOCK_K 16 leaves a little more headroom than 32). At BLOCK_H 512 no config compiles
#   without spilling; the one listed spills least (about 940 bytes).
# - BLOCK_N trades L2 traffic (every column block re-reads the channel and all of Ar_h) against registers
#   (the BLOCK_H x BLOCK_N column of T stays in registers) and padding (224 -> 160: 32 pads nothing, 64
#   pads 160 to 192). Which wins needs a GPU, hence the autotuner.
# - One MMA family per list, the same in every list: BLOCK_M <= 32, so on sm_90 every candidate compiles
#   stage 1 to wgmma (mma.sync below 64 rows: BLOCK_H 16 and 32) and stage 2 to mma.sync
#   (test_compile_sm90.py reads the versions from the TTGIR).
#   BLOCK_M 64 would switch stage 2 to wgmma, whose accumulation order inside a tile differs from
#   mma.sync's, so the autotuner's pick would change the output bits (and it costs shared memory).
#   mma.sync rather than wgmma for stage 2 because the tf32x3 and 512-row lists cannot leave it
#   (BLOCK_M 16: larger tiles spill), so every shape and precision now shares one family.
# - Within a list BLOCK_K and num_warps are fixed, so the stage-1 chunking and the Nyquist sum keep one
#   reduction order whichever config wins (test_lowpass.py checks that the configs give identical bits
#   on a GPU; test_compile_sm90.py that the candidates of a list compile to one MMA version).
_GPU_CONFIGS = {
    ("tf32", 128): [(32, 32, 32, 4, 2), (64, 32, 32, 4, 2), (32, 16, 32, 4, 2)],
    ("tf32", 256): [(32, 32, 32, 8, 2), (64, 32, 32, 8, 2), (32, 16, 32, 8, 2)],
    ("tf32", 512): [(32, 16, 16, 8, 2), (16, 16, 16, 8, 2), (32, 32, 16, 8, 2)],
    ("tf32x3", 128): [(32, 16, 16, 4, 2), (64, 16, 16, 4, 2), (32, 32, 16, 4, 2)],
    ("tf32x3", 256): [(32, 16, 16, 8, 2), (64, 16, 16, 8, 2)],
    ("tf32x3", 512): [(32, 16, 16, 8, 2)],
}


def _gpu_configs(precision: str, block_h: int) -> list[tuple[int, int, int, int, int]]:
    """The candidate launch configurations for one precision and BLOCK_H (first = default)."""
    top = min(t for p, t in _GPU_CONFIGS if p == precision and t >= block_h)
    return _GPU_CONFIGS[(precision, top)]


if triton is not None:

    def _config(c) -> "triton.Config":
        return triton.Config({"BLOCK_N": c[0], "BLOCK_M": c[1], "BLOCK_K": c[2]}, num_warps=c[3], num_stages=c[4])

    def _config_tuple(cfg) -> tuple[int, int, int, int, int]:
        kw = cfg.kwargs
        return kw["BLOCK_N"], kw["BLOCK_M"], kw["BLOCK_K"], cfg.num_warps, cfg.num_stages

    def _prune_configs(configs, named_args, **kwargs):
        wanted = _gpu_configs(kwargs["INPUT_PRECISION"], kwargs["BLOCK_H"])
        return [c for c in configs if _config_tuple(c) in wanted]

    # The same kernel behind an autotuner, for CUDA launches without explicit block sizes. Keyed on the
    # sizes and the layout (unit strides); the dtypes of the tensor arguments are added by Triton. The
    # first call of a key times its candidates (compiles them, runs each a few times, synchronises):
    # make it outside CUDA graph capture.
    _lowpass_crop_tuned = triton.autotune(
        configs=[_config(c) for c in dict.fromkeys(c for cs in _GPU_CONFIGS.values() for c in cs)],
        key=["H", "W", "h", "w", "sxw", "syw"],
        prune_configs_by={"early_config_prune": _prune_configs},
    )(_lowpass_crop_kernel)


def lowpass_crop_triton(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None,
                        block_n=None, block_m=None, block_k=None, num_warps=None, num_stages=None, kind="fourier"):
    """Launch the Triton kernel (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``). ``kind``
    "lanczos": the same kernel with Pillow's Lanczos resize matrices and no Nyquist term.

    Every tl.dot tile dimension is at least 16 (the GPU compiler's minimum); padding is masked. On CUDA,
    without overrides, the launch configuration is autotuned among ``_GPU_CONFIGS`` for the shape; any of
    ``block_n`` / ``block_m`` / ``block_k`` / ``num_warps`` / ``num_stages`` fixes it instead (the
    missing ones come from the first listed config)."""
    if triton is None:
        raise RuntimeError("lowpass_crop_triton needs Triton, which is not installed")
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format, _KERNEL_IN)
    if out_dtype not in _KERNEL_OUT:
        raise ValueError(f"the Triton kernel writes float32, float16 or bfloat16, not {out_dtype}")
    B, C, H, W = x.shape
    if H > MAX_KERNEL_HEIGHT:
        raise ValueError(f"the Triton kernel supports input heights up to {MAX_KERNEL_HEIGHT}, got {H}")
    dev = x.device
    ar_h, _, v_h = _axis_factors(H, h, torch.float32, dev, kind)
    _, art_w, v_w = _axis_factors(W, w, torch.float32, dev, kind)
    nyq = v_h is not None and v_w is not None
    fmt = torch.channels_last if cl else torch.contiguous_format
    y = torch.empty((B, C, h, w), dtype=out_dtype, device=dev, memory_format=fmt)
    if y.numel() == 0:
        return y
    if mean is not None:
        mu = torch.tensor(mean, dtype=torch.float32, device=dev)
        rstd = 1.0 / torch.tensor(std, dtype=torch.float64)
        rstd = rstd.to(dtype=torch.float32, device=dev)
    else:
        mu = rstd = ar_h  # unused (NORMALIZE is off); any valid pointer
    block_h = _next_pow2(H)
    precision = "tf32" if out_dtype == torch.bfloat16 else "tf32x3"
    args = (x, y, ar_h, art_w, v_h if nyq else ar_h, v_w if nyq else ar_h, mu, rstd,
            C, H, W, h, w, *x.stride(), *y.stride())
    meta = dict(HAS_NYQUIST=nyq, NORMALIZE=mean is not None, INPUT_PRECISION=precision, BLOCK_H=block_h)
    overrides = (block_n, block_m, block_k, num_warps, num_stages)
    interp = dev.type == "cpu"
    if not interp and all(v is None for v in overrides):
        _lowpass_crop_tuned[lambda cfg: (B * C * triton.cdiv(w, cfg["BLOCK_N"]),)](*args, **meta)
        return y
    if interp:  # the interpreter: large blocks, fewer (slow) Python-level iterations
        default = (min(64, _next_pow2(w)), min(64, _next_pow2(h)), min(64, _next_pow2(W)), 4, 2)
    else:
        default = _gpu_configs(precision, block_h)[0]
    bn, bm, bk, nw, ns = (d if v is None else v for v, d in zip(overrides, default))
    _lowpass_crop_kernel[(B * C * triton.cdiv(w, bn),)](
        *args, **meta, BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=bk, num_warps=nw, num_stages=ns)
    return y


# --------------------------------------------------------------------------------------------------
# Filter (fixed size)
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _filter_factors(N: int, n: int, dtype: torch.dtype, device: torch.device):
    """Fr (N, N), Fr^T, and Fi, Fi^T (None where F is real: odd n or n == N)."""
    F = _filter_matrix64(N, n)
    fr = F.real.to(dtype=dtype, device=device).contiguous()
    frt = F.real.t().to(dtype=dtype, device=device).contiguous()
    if n % 2 == 1 or n == N:
        return fr, frt, None, None
    fi = F.imag.to(dtype=dtype, device=device).contiguous()
    return fr, frt, fi, F.imag.t().to(dtype=dtype, device=device).contiguous()


def lowpass_filter_ref(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None):
    """Ground truth for ``lowpass_filter`` with torch.fft in float64: zero the spectrum outside the window."""
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format)
    H, W = x.shape[-2:]
    keep_h = torch.zeros(H, dtype=torch.bool)
    keep_h[_kept_freqs(h) % H] = True
    keep_w = torch.zeros(W, dtype=torch.bool)
    keep_w[_kept_freqs(w) % W] = True
    keep = (keep_h[:, None] & keep_w[None, :]).to(x.device)
    y = torch.fft.ifft2(torch.fft.fft2(x.to(torch.float64)) * keep).real
    return _finish(y, mean, std, out_dtype, cl)


def _lowpass_filter_matmul(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None):
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format)
    H, W = x.shape[-2:]
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(cdt)
    fr_h, _, fi_h, _ = _filter_factors(H, h, cdt, x.device)
    _, frt_w, _, fit_w = _filter_factors(W, w, cdt, x.device)
    y = torch.matmul(fr_h, torch.matmul(xf, frt_w))
    if fi_h is not None and fit_w is not None:
        y = y - torch.matmul(fi_h, torch.matmul(xf, fit_w))
    return _finish(y, mean, std, out_dtype, cl)


# --------------------------------------------------------------------------------------------------
# torch.library ops and the dispatcher
# --------------------------------------------------------------------------------------------------
def _fake_out(x, h, w, out_dtype, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((x.shape[0], x.shape[1], h, w), dtype=out_dtype, device=x.device, memory_format=fmt)


def _fmt(channels_last: bool):
    return torch.channels_last if channels_last else torch.contiguous_format


@torch.library.custom_op("vitdata::lowpass_crop", mutates_args=())
def _lowpass_crop_op(x: torch.Tensor, h: int, w: int, mean: Optional[list[float]], std: Optional[list[float]],
                     out_dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    return lowpass_crop_matmul(x, (h, w), mean=mean, std=std, out_dtype=out_dtype, memory_format=_fmt(channels_last))


@_lowpass_crop_op.register_kernel("cuda")
def _lowpass_crop_cuda(x, h, w, mean, std, out_dtype, channels_last):
    if triton is None or x.shape[-2] > MAX_KERNEL_HEIGHT or x.dtype not in _KERNEL_IN or out_dtype not in _KERNEL_OUT:
        return lowpass_crop_matmul(x, (h, w), mean=mean, std=std, out_dtype=out_dtype,
                                   memory_format=_fmt(channels_last))
    return lowpass_crop_triton(x, (h, w), mean=mean, std=std, out_dtype=out_dtype, memory_format=_fmt(channels_last))


@_lowpass_crop_op.register_fake
def _(x, h, w, mean, std, out_dtype, channels_last):
    return _fake_out(x, h, w, out_dtype, channels_last)


@torch.library.custom_op("vitdata::lowpass_filter", mutates_args=())
def _lowpass_filter_op(x: torch.Tensor, h: int, w: int, mean: Optional[list[float]], std: Optional[list[float]],
                       out_dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    return _lowpass_filter_matmul(x, (h, w), mean=mean, std=std, out_dtype=out_dtype,
                                  memory_format=_fmt(channels_last))


@_lowpass_filter_op.register_fake
def _(x, h, w, mean, std, out_dtype, channels_last):
    return _fake_out(x, x.shape[-2], x.shape[-1], out_dtype, channels_last)


def lowpass_crop(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None):
    """EfficientTrain's low-frequency crop of a batch: (B, C, H, W) -> (B, C, h, w).

    x: uint8, float32, float16 or bfloat16 (float64 too, via the matmul form), any strides.
    size: int or (h, w), each between 1 and the input size. mean / std: optional per-channel
    normalisation ``(y - mean) / std`` in the units of x, fused. out_dtype: default x's dtype (float32
    for uint8). memory_format: default that of x (channels_last if x is channels_last-contiguous).
    CPU: ``lowpass_crop_chunked``; CUDA: Triton kernel (see the module docstring). Registered as
    ``torch.ops.vitdata.lowpass_crop`` so it traces under torch.compile."""
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format)
    return torch.ops.vitdata.lowpass_crop(x, h, w, mean, std, out_dtype, cl)


def lowpass_filter(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None):
    """Remove the frequencies outside the centred (h, w) window, keeping (B, C, H, W).

    Equals ``lowpass_crop`` followed by band-limited (zero-padded spectrum) interpolation back to
    (H, W), at the pixel scale of x (the mean is kept). Same arguments as ``lowpass_crop``; torch.matmul
    on every device (``torch.ops.vitdata.lowpass_filter``)."""
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format)
    return torch.ops.vitdata.lowpass_filter(x, h, w, mean, std, out_dtype, cl)
