"""The low-frequency crop's CPU route: ``lowpass_crop`` on CPU tensors, by FFT or GEMMs, one chunk at a time.

What it computes
    Exactly ``lowpass.lowpass_crop`` (same signature, same result up to float32 rounding, within the bound
    the tests pin against the float64 reference): see ``kernels/lowpass.py`` for the operation, the
    matrix form and the GPU kernel. Imported by ``vitdata.kernels``, which registers
    :func:`lowpass_crop_chunked` as the CPU kernel of ``torch.ops.vitdata.lowpass_crop``; CUDA keeps the
    Triton kernel.

Why not the matrix form over the whole batch on CPU
    ``lowpass_crop_matmul`` on a 256 x 3 x 256 x 256 uint8 batch (-> 224, normalised, float32) allocates a
    float copy of the input, T, Y, and two more for the normalisation and the cast, about 1 GB: the first
    touch of fresh pages costs about 0.5 ms per MB here, as much as the GEMMs; the Nyquist ``einsum`` and
    the separate normalisation add two passes over the batch. On one image the GEMMs themselves cost
    2.5x an FFT route (below).

The route
    Per chunk of ``chunk_bytes`` of float input (default one 256 x 256 RGB image, whose temporaries
    stay in a core's L2 and below glibc's mmap threshold, so no call page-faults): one ``addcmul``
    converts to float and normalises, ``(x - mean) / std``, with the factor ``(h/H) (w/W)`` of the FFT
    route folded in (normalising first is exact up to rounding: the crop is linear and keeps constants);
    then the crop by :func:`_chunk_fft` or :func:`_chunk_gemm`, written once into the output in its dtype
    and layout. The only full-size allocation is the output.

    FFT or GEMMs, by shape: per channel the GEMMs cost ``H W w + h H w`` multiply-adds and the FFTs about
    ``H W log2(H W)`` butterflies. CPU time of the whole route on one thread (64 uint8 images, normalised
    float32 out, ms per image), FFT against GEMMs (ratio of the two counts): 256 -> 224 0.84 / 2.35 (26),
    224 -> 160 0.65 / 1.45 (18), 192 -> 160 0.58 / 0.98 (19), 160 -> 128 0.32 / 0.53 (16), 128 -> 112
    0.23 / 0.33 (15), 112 -> 96 0.17 / 0.22 (13), 96 -> 80 0.13 / 0.13 (11), 80 -> 64 0.090 / 0.084 (9).
    ``FFT_ABOVE`` = 11 splits them. The choice depends on the shape only, never on a timing, so a run is
    reproducible bit for bit.

Threads
    A call's chunks are shared among ``torch.get_num_threads()`` threads of a private pool (torch ops
    release the GIL), each running its chunks' ops on one intra-op thread; the result does not depend
    on the thread count (bit for bit; a test). Splitting every small op over the cores instead puts a
    barrier in each, and where the cores are busy (DALI's threads decoding beside it, other processes)
    each barrier waits for a thread the scheduler has put aside: 32 x 3 x 224 x 224 -> 160 on 2 threads
    at load 15 took 10.7 s split op by op against 0.72 s for the whole-batch matmul form. The loader
    calls this route on the cores decoding leaves (``vitdata.loader.host.kernel_threads``; one on a
    2-core host).

Timings
    ``vitdata bench kernels`` on CPU: rows ``chunked CPU route (fft)`` / ``(gemm)`` beside the matmul form
    and torch.fft, and the loader's step (uint8 -> normalised crop + PatchErasing) against the path this
    route replaced, in one process; the record gives the load.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch

from .lowpass import _axis_factors, _check, _checkerboard, _fmt

CHUNK_BYTES = 1 << 20
FFT_ABOVE = 11.0


def crop_route(H: int, W: int, h: int, w: int) -> str:
    """"fft" or "gemm": the cheaper way to crop one (H, W) channel to (h, w) on CPU (module docstring)."""
    return "fft" if (H * W * w + h * H * w) > FFT_ABOVE * H * W * math.log2(max(2, H * W)) else "gemm"


def lowpass_crop_chunked(x, size, *, mean=None, std=None, out_dtype=None, memory_format=None,
                         chunk_bytes: int = CHUNK_BYTES, route: Optional[str] = None, kind: str = "fourier"):
    """``lowpass_crop`` over chunks of ``chunk_bytes`` of float input (at least one image), each cropped by
    ``route`` "fft" or "gemm" (default :func:`crop_route`). Same arguments and result as ``lowpass_crop``.
    ``kind`` "lanczos": Pillow's Lanczos resize instead (always the GEMMs; ``kernels.resample``)."""
    (h, w), mean, std, out_dtype, cl = _check(x, size, mean, std, out_dtype, memory_format)
    B, C, H, W = x.shape
    dev = x.device
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = torch.empty((B, C, h, w), dtype=out_dtype, device=dev, memory_format=_fmt(cl))
    if y.numel() == 0:
        return y
    huge_pages(y)
    route = "gemm" if kind == "lanczos" else route or crop_route(H, W, h, w)
    if route not in ("fft", "gemm"):
        raise ValueError(f"route must be 'fft' or 'gemm', got {route!r}")
    gain = (h / H) * (w / W) if route == "fft" else 1.0
    rstd = torch.tensor([gain] * C if std is None else [gain / v for v in std], dtype=torch.float64)
    shift = torch.zeros(C, dtype=torch.float64) if mean is None else -torch.tensor(mean, dtype=torch.float64) * rstd
    rstd, shift = rstd.view(1, C, 1, 1), shift.view(1, C, 1, 1)
    centred = route == "fft" and H % 2 == 0 and h % 2 == 0 and h < H
    if centred:     # x (-1)^i along H: the kept rows become one block of the spectrum (see _chunk_fft)
        alt = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(H // 2).view(1, 1, H, 1)
        rstd, shift = rstd * alt, shift * alt
    rstd, shift = rstd.to(dev, cdt), shift.to(dev, cdt)
    k = max(1, min(B, chunk_bytes // max(1, C * H * W * (8 if cdt == torch.float64 else 4))))
    direct = out_dtype == cdt and not cl        # the output chunk itself is a contiguous buffer to write
    if route == "fft":
        crop = functools.partial(_chunk_fft, centred=centred)
    else:
        crop = functools.partial(_chunk_gemm, kind=kind)

    def run(starts):
        xb = torch.empty((k, C, H, W), dtype=cdt, device=dev)
        yb = None if direct else torch.empty((k, C, h, w), dtype=cdt, device=dev)
        for b0 in starts:
            n = min(k, B - b0)
            torch.addcmul(shift, x[b0:b0 + n], rstd, out=xb[:n])
            yc = y[b0:b0 + n] if direct else yb[:n]
            crop(xb[:n], yc, h, w)
            if not direct:
                y[b0:b0 + n].copy_(yc)

    starts = list(range(0, B, k))
    threads = min(torch.get_num_threads(), len(starts))
    if threads <= 1:
        run(starts)
        return y
    before = torch.get_num_threads()
    torch.set_num_threads(1)     # the pool's threads start (and stay) on one intra-op thread each
    try:
        list(_pool(threads).map(run, [starts[i::threads] for i in range(threads)]))
    finally:
        torch.set_num_threads(before)
    return y


_POOL: dict = {"executor": None, "workers": 0}


def _pool(workers: int) -> ThreadPoolExecutor:
    """The threads that share a call's chunks (torch ops release the GIL), grown on demand. A thread takes
    its intra-op thread count from the process setting when it first runs a torch op, which every
    call sets to 1 while it uses the pool, so each chunk's ops run serially, without barriers."""
    if _POOL["workers"] < workers:
        if _POOL["executor"] is not None:
            _POOL["executor"].shutdown(wait=False)
        _POOL.update(executor=ThreadPoolExecutor(workers, thread_name_prefix="vitdata-lowpass"), workers=workers)
    return _POOL["executor"]


def _forget_pool() -> None:
    _POOL.update(executor=None, workers=0)    # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_forget_pool)


_LIBC: dict = {}


def huge_pages(t: torch.Tensor, min_bytes: int = 4 << 20) -> None:
    """Ask Linux to back a fresh CPU tensor's memory with transparent huge pages before it is first written
    (``madvise(MADV_HUGEPAGE)``; the hosts here run THP in ``madvise`` mode). The first write of a fresh
    allocation page-faults every 4 KB: 154 MB (a 256 x 3 x 224 x 224 float32 batch) took 74 ms of CPU
    to allocate and fill against 10 ms for a buffer already touched, 17 ms with huge pages. Nothing happens
    off Linux, for small tensors or if the call fails: it only changes how fast the first write is."""
    nbytes = t.numel() * t.element_size()
    if t.device.type != "cpu" or nbytes < min_bytes or not sys.platform.startswith("linux"):
        return
    if "madvise" not in _LIBC:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _LIBC["madvise"] = libc.madvise
        except (OSError, AttributeError):
            _LIBC["madvise"] = None
    if _LIBC["madvise"] is not None:
        start = (t.data_ptr() + 4095) & ~4095          # whole pages inside the allocation
        _LIBC["madvise"](start, (t.data_ptr() + nbytes - start) & ~4095, 14)   # 14: MADV_HUGEPAGE


def _chunk_fft(x: torch.Tensor, out: torch.Tensor, h: int, w: int, centred: bool = False) -> None:
    """``out`` (n, C, h, w) = the crop of real ``x`` (n, C, H, W) without the factor (h/H)(w/W).

    rfft along W, keeping the column frequencies 0..w//2; fft along H; the kept rows; ifft along H
    (length h) and irfft along W (length w). The kept rows are 0..h-h//2-1 and H-h//2..H-1, gathered by a
    copy; or, ``centred`` (even H and h < H, x multiplied by (-1)^i along H beforehand, which moves row
    frequency k to k + H/2), the block H/2-h/2 .. H/2+h/2-1 taken as it lies, whose ifft is the wanted
    one times (-1)^m, undone on the output rows. The kept negative column frequencies are the conjugate
    mirrors of the positive ones taken with the row window negated, which for even h moves the unpaired
    row -h/2 to +h/2. irfft counts columns 1..(w-1)//2 twice (each with its mirror), so their row -h/2
    holds the mean of rows -h/2 and +h/2 (for column 0 that mean has the same real part), and counts the
    Nyquist column w/2 of an even w once, so its row -h/2 holds row +h/2's value."""
    H = x.shape[-2]
    f = torch.fft.fft(torch.fft.rfft(x, dim=-1)[..., :w // 2 + 1], dim=-2)
    if centred:
        r0 = H // 2 - h // 2
        z, row, plus = f[..., r0:r0 + h, :], 0, f[..., r0 + h, :]
    else:
        z, row, plus = torch.cat([f[..., :h - h // 2, :], f[..., H - h // 2:, :]], dim=-2), h // 2, f[..., h // 2, :]
    if h % 2 == 0 and h < H:
        z[..., row, :] += plus
        z[..., row, :] *= 0.5
        if w % 2 == 0:
            z[..., row, w // 2] = plus[..., w // 2]
    torch.fft.irfft(torch.fft.ifft(z, dim=-2), n=w, dim=-1, out=out)
    if centred:
        out.mul_(_alternating(h, out.dtype, out.device))


@functools.lru_cache(maxsize=16)
def _alternating(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, 1) column of 1, -1, 1, ..."""
    return torch.tensor([1.0, -1.0], dtype=dtype, device=device).repeat((n + 1) // 2)[:n].view(n, 1)


def _chunk_gemm(x: torch.Tensor, out: torch.Tensor, h: int, w: int, kind: str = "fourier") -> None:
    """``out`` = ``Ar_h x Ar_w^T - s (-1)^(m+j)``: one mm over all rows of the chunk, one bmm, and for even
    sizes the Nyquist sum ``s = v_h^T x v_w`` as two matrix-vector products (``kernels/lowpass.py``)."""
    n, C, H, W = x.shape
    ar_h, _, v_h = _axis_factors(H, h, x.dtype, x.device, kind)
    _, art_w, v_w = _axis_factors(W, w, x.dtype, x.device, kind)
    t = torch.mm(x.view(-1, W), art_w)
    torch.bmm(ar_h.expand(n * C, h, H), t.view(n * C, H, w), out=out.view(n * C, h, w))
    if v_h is not None and v_w is not None:
        s = torch.mv(torch.mv(x.view(-1, W), v_w).view(n * C, H), v_h)
        out.view(n * C, h, w).addcmul_(s.view(n * C, 1, 1), _checkerboard(h, w, x.dtype, x.device), value=-1.0)


def _register() -> None:
    """Make :func:`lowpass_crop_chunked` the CPU kernel of ``torch.ops.vitdata.lowpass_crop`` (the op's
    default, the matmul form, stays for devices without a kernel of their own)."""
    from .lowpass import _lowpass_crop_op

    @_lowpass_crop_op.register_kernel("cpu")
    def _(x, h, w, mean, std, out_dtype, channels_last):
        return lowpass_crop_chunked(x, (h, w), mean=mean, std=std, out_dtype=out_dtype,
                                    memory_format=_fmt(channels_last))


_register()
