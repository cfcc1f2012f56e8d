"""PatchErasing: erase a random subset of the cells of the ViT patch grid, per sample, in one launch.

What it computes
    For a batch x (B, C, H, W) and a grid (gh, gw) with H = gh * ph and W = gw * pw, every cell
    (b, cy, cx) marked in ``params.mask`` has all its C x ph x pw values replaced by the fill; every
    other value is left as it is. Cells are numbered row-major (``g = cy * gw + cx``), the order of
    a ViT's patch tokens. It runs on the normalised batch (float32 / float16 / bfloat16), NCHW,
    channels_last or any strides, in place or out of place (docs/methods.md §1, the operational
    definition: applied per sample after normalisation, before Mixup).

Fill modes
    ``zero``    0. After normalisation this is the dataset-mean fill of the paper (docs/methods.md §1).
    ``mean``    the per-image, per-channel mean of the image before erasing (accumulated in float32,
                rounded to x's dtype; one torch reduction ahead of the launch, shared by kernel and
                reference, so this fill is bit-identical between them).
    ``normal``  N(0, 1) noise from a counter-based generator: for element (b, c, y, x) with
                ``n = (c * H + y) * W + x``, ``key = mix32(seed_b)``, ``h1 = mix32(key ^ mix32(2n))``,
                ``h2 = mix32(key ^ mix32(2n + 1))``, ``u1 = ((h1 >> 8) + 1) / 2^24``, ``u2 = (h2 >> 8) / 2^24``,
                ``z = sqrt(-2 ln u1) cos(2 pi u2)`` (Box-Muller). ``mix32`` is a 32-bit xor-shift-multiply
                hash (multipliers below 2^31 so the torch version can use int64 without overflow).
                The integer part is bit-identical in kernel and reference; log / sqrt / cos may differ by
                an ulp in float32 between Triton and torch, so the noise agrees to ~1e-6 (exactly after
                rounding to the output dtype in almost every element). The noise depends only on
                (seed_b, position), not on the batch, layout or device.

Randomness is apart from the transform
    ``sample_patch_erase_params(batch, grid, ratio, generator)`` draws, per sample, exactly
    ``floor(ratio_b * gh * gw + 0.5)`` distinct cells uniformly (ranks of i.i.d. uniform scores) and
    one 31-bit noise seed; ``patch_erase(x, params, ...)`` is deterministic given params.

Implementations
    ``patch_erase_ref``     torch (any device).
    ``patch_erase_cells``   torch, the CPU route: the erased cells are indexed through a
                            (B, C, gh, ph, gw, pw) view of the output and only they are written (the
                            ``normal`` noise is generated for them alone), bit-identical to the reference.
    ``patch_erase_triton``  one Triton launch over (sample, cell): each program loads its mask bit; an
                            erased cell writes the fill, a kept cell copies x (out of place) or does
                            nothing (in place).
    ``patch_erase``         the dispatcher: Triton on CUDA, ``patch_erase_cells`` on CPU; registered as
                            ``vitdata::patch_erase`` (functional) and ``vitdata::patch_erase_`` (in place).

Bytes moved per element
    Out of place: read x once, write once (2 x itemsize per element) plus B*gh*gw mask bytes.
    In place: only the erased fraction r is written (r x itemsize per element, zero / normal);
    ``mean`` adds one read of x for the reduction.
Checked for the GPU, without one
    ``tests/kernels/test_compile_sm90.py`` compiles the kernel for sm_90 (H100) with the arguments the
    launcher passes: every fill, float32 / float16 / bfloat16, NCHW / channels_last / offset views, in
    place and not, patches 16, 14, 32 and (8, 4). At 224 / patch 16 (block 1024, 4 warps): 16-18 registers
    for ``zero``, 32 for ``mean``, 40 for ``normal``; no spills, no shared memory; NCHW cells are read and
    written with vector accesses (a 16-value row is contiguous), channels_last ones element by element.
    ``num_warps`` grows with the cell (about 8 values per thread): patch 32 ``normal`` needs 168 registers
    at 4 warps and 40 at 16. Speed still needs a GPU.

Timings
    GPU: not yet measured on GPU (``benchmarks/bench_kernels.py`` compares with timm's RandomErasing).
    CPU: the reference expands the cell mask to (B, 1, H, W), finds the erased elements with ``nonzero``
    (``normal``) or rewrites the whole batch with ``torch.where`` (``zero`` / ``mean``): several full-size
    passes and allocations. ``patch_erase_cells`` writes the erased fraction only; in place with
    ``zero`` (the loader's step) it touches nothing else. ``normal`` still costs ~20 int64 passes over
    the erased elements (the hash). Timings: ``vitdata bench kernels`` (rows ``ref`` and ``cells``).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Union

import torch

try:  # Triton is optional at import time (see lowpass.py).
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

FILLS = ("zero", "mean", "normal")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_M1 = 0x7FEB352D
_M2 = 0x2C1B3C6D
_U32 = 0xFFFFFFFF


# --------------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _mix32(h):
        h ^= h >> 16
        h *= 0x7FEB352D
        h ^= h >> 15
        h *= 0x2C1B3C6D
        h ^= h >> 16
        return h

    @triton.jit
    def _patch_erase_kernel(
        x_ptr, y_ptr, mask_ptr, seed_ptr, mean_ptr,
        C, H, W, GW, G,
        sxb, sxc, sxh, sxw,
        syb, syc, syh, syw,
        PH: tl.constexpr, PW: tl.constexpr, FILL: tl.constexpr, COPY: tl.constexpr, BLOCK: tl.constexpr,
    ):
        # One program per (sample, cell); the cell's C x PH x PW values are one flat block.
        pid = tl.program_id(0)
        b = pid // G
        g = pid % G
        erased = tl.load(mask_ptr + pid) != 0
        cy = g // GW
        cx = g % GW
        offs = tl.arange(0, BLOCK)
        c = offs // (PH * PW)
        r = (offs // PW) % PH
        q = offs % PW
        ok = c < C
        yy = cy * PH + r
        xx = cx * PW + q
        b64 = b.to(tl.int64)
        y_off = b64 * syb + c * syc + yy * syh + xx * syw
        if erased:
            if FILL == 0:
                v = tl.zeros((BLOCK,), dtype=tl.float32)
            elif FILL == 1:
                v = tl.load(mean_ptr + b * C + c, mask=ok, other=0.0).to(tl.float32)
            else:
                seed = tl.load(seed_ptr + b).to(tl.uint32)
                key = _mix32(seed)
                n = ((c * H + yy) * W + xx).to(tl.uint32)
                h1 = _mix32(key ^ _mix32(2 * n))
                h2 = _mix32(key ^ _mix32(2 * n + 1))
                u1 = ((h1 >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08
                u2 = (h2 >> 8).to(tl.float32) * 5.9604644775390625e-08
                v = tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)
            tl.store(y_ptr + y_off, v.to(y_ptr.dtype.element_ty), mask=ok)
        else:
            if COPY:
                xv = tl.load(x_ptr + b64 * sxb + c * sxc + yy * sxh + xx * sxw, mask=ok, other=0.0)
                tl.store(y_ptr + y_off, xv, mask=ok)


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PatchEraseParams:
    """What to erase: ``mask`` (B, gh, gw) bool, True = erase that cell; ``seed`` (B,) int64 in
    [0, 2^31), the per-sample key of the ``normal`` fill."""
    mask: torch.Tensor
    seed: torch.Tensor

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.mask.shape[1]), int(self.mask.shape[2])

    def to(self, device) -> "PatchEraseParams":
        return PatchEraseParams(self.mask.to(device, non_blocking=True), self.seed.to(device, non_blocking=True))


def _grid_pair(grid) -> tuple[int, int]:
    if isinstance(grid, int):
        return grid, grid
    gh, gw = (int(g) for g in grid)
    return gh, gw


def sample_patch_erase_params(batch: int, grid, ratio: Union[float, torch.Tensor],
                              generator: Optional[torch.Generator] = None, device=None) -> PatchEraseParams:
    """Draw which cells to erase. grid: (gh, gw) or int; ratio: float or (batch,) tensor in [0, 1].

    Sample b gets exactly ``floor(ratio_b * gh * gw + 0.5)`` distinct cells, uniform without
    replacement. Drawn on the generator's device (CPU by default), then moved to ``device``."""
    gh, gw = _grid_pair(grid)
    if batch < 0 or gh < 1 or gw < 1:
        raise ValueError(f"need batch >= 0 and a grid of at least 1x1, got batch={batch}, grid={(gh, gw)}")
    G = gh * gw
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    r = torch.as_tensor(ratio, dtype=torch.float64).to(gen_dev)
    if r.dim() == 0:
        r = r.expand(batch)
    if r.shape != (batch,):
        raise ValueError(f"ratio must be a float or a ({batch},) tensor, got shape {tuple(r.shape)}")
    if bool(((r < 0) | (r > 1) | torch.isnan(r)).any()):
        raise ValueError("ratio must lie in [0, 1]")
    count = torch.floor(r * G + 0.5).long()
    scores = torch.rand((batch, G), generator=generator, device=gen_dev)
    order = scores.argsort(dim=1)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(G, device=gen_dev).expand(batch, G).contiguous())
    mask = (rank < count[:, None]).view(batch, gh, gw)
    seed = torch.randint(0, 2**31, (batch,), generator=generator, device=gen_dev, dtype=torch.int64)
    params = PatchEraseParams(mask, seed)
    return params.to(device) if device is not None else params


# --------------------------------------------------------------------------------------------------
# Checks, the fill values, the reference
# --------------------------------------------------------------------------------------------------
def _patch_pair(patch_size) -> tuple[int, int]:
    if isinstance(patch_size, int):
        return patch_size, patch_size
    ph, pw = (int(p) for p in patch_size)
    return ph, pw


def _check(x, params: PatchEraseParams, patch_size, fill):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"x dtype {x.dtype} not supported (patch erasing works on the normalised float batch: "
                         "float32, float16 or bfloat16)")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    B, C, H, W = x.shape
    ph, pw = _patch_pair(patch_size)
    if ph < 1 or pw < 1 or H % ph or W % pw:
        raise ValueError(f"patch_size {(ph, pw)} must divide the image size {(H, W)}")
    gh, gw = H // ph, W // pw
    if tuple(params.mask.shape) != (B, gh, gw):
        raise ValueError(f"params.mask has shape {tuple(params.mask.shape)}; x {tuple(x.shape)} with patch "
                         f"{(ph, pw)} needs {(B, gh, gw)}")
    if tuple(params.seed.shape) != (B,):
        raise ValueError(f"params.seed must have shape ({B},), got {tuple(params.seed.shape)}")
    if params.mask.device != x.device or params.seed.device != x.device:
        raise ValueError(f"params are on {params.mask.device}, x on {x.device}: move them with params.to()")
    return ph, pw


def channel_means(x: torch.Tensor) -> torch.Tensor:
    """(B, C) float32 per-image per-channel mean: the ``mean`` fill."""
    return x.float().mean(dim=(2, 3))


def _mix32_torch(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = (h * _M1) & _U32
    h = h ^ (h >> 15)
    h = (h * _M2) & _U32
    return h ^ (h >> 16)


@functools.lru_cache(maxsize=8)
def _counter_hashes(C: int, H: int, W: int, device: torch.device):
    """mix32(2n), mix32(2n + 1) for every position n of a (C, H, W) sample: seed-independent, cached."""
    n = torch.arange(C * H * W, device=device, dtype=torch.int64)
    return _mix32_torch((2 * n) & _U32), _mix32_torch((2 * n + 1) & _U32)


def _box_muller(key: torch.Tensor, hn1: torch.Tensor, hn2: torch.Tensor) -> torch.Tensor:
    h1 = _mix32_torch(key ^ hn1)
    h2 = _mix32_torch(key ^ hn2)
    u1 = ((h1 >> 8) + 1).float() * 2.0**-24
    u2 = (h2 >> 8).float() * 2.0**-24
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(6.283185307179586 * u2)


def normal_noise(seed: torch.Tensor, C: int, H: int, W: int) -> torch.Tensor:
    """(B, C, H, W) float32 N(0, 1) noise of the ``normal`` fill (the counter-based generator above)."""
    key = _mix32_torch(seed.to(torch.int64) & _U32)[:, None]
    hn1, hn2 = _counter_hashes(C, H, W, seed.device)
    return _box_muller(key, hn1[None], hn2[None]).view(-1, C, H, W)


def patch_erase_ref(x, params: PatchEraseParams, patch_size, fill: str = "zero", inplace: bool = False):
    """Reference in torch with the same signature and result as ``patch_erase``. The ``normal`` noise
    is generated only at the erased positions."""
    ph, pw = _check(x, params, patch_size, fill)
    B, C, H, W = x.shape
    cell = params.mask.repeat_interleave(ph, dim=1).repeat_interleave(pw, dim=2)[:, None]  # (B, 1, H, W)
    out = x if inplace else x.clone(memory_format=_same_format(x))
    if fill == "normal":
        b, c, yy, xx = cell.expand(B, C, H, W).nonzero(as_tuple=True)
        n = (c * H + yy) * W + xx
        hn1, hn2 = _counter_hashes(C, H, W, x.device)
        key = _mix32_torch(params.seed.to(torch.int64) & _U32)
        out[b, c, yy, xx] = _box_muller(key[b], hn1[n], hn2[n]).to(x.dtype)
        return out
    if fill == "zero":
        v = torch.zeros((), dtype=x.dtype, device=x.device)
    else:
        v = channel_means(x)[:, :, None, None].to(x.dtype)
    out.copy_(torch.where(cell, v, out))
    return out


def patch_erase_cells(x, params: PatchEraseParams, patch_size, fill: str = "zero", inplace: bool = False):
    """The CPU route, same signature and result (bit for bit) as ``patch_erase_ref``: the erased cells
    ``(b, cy, cx)`` index dims 0, 2, 4 of a (B, C, gh, ph, gw, pw) view of the output (any strides),
    so one ``index_put_`` writes their (n, C, ph, pw) values and nothing else."""
    ph, pw = _check(x, params, patch_size, fill)
    B, C, H, W = x.shape
    gh, gw = H // ph, W // pw
    if fill == "mean":
        v = channel_means(x).to(x.dtype)        # before any write: the mean of the image as it was
    out = x if inplace else x.clone(memory_format=_same_format(x))
    b, cy, cx = params.mask.nonzero(as_tuple=True)
    if not len(b):
        return out
    cells = out.unflatten(3, (gw, pw)).unflatten(2, (gh, ph))
    if fill == "zero":
        v = torch.zeros((), dtype=x.dtype, device=x.device)
    elif fill == "mean":
        v = v[b][:, :, None, None]
    else:
        # element (c, cy*ph + r, cx*pw + q) of a sample has counter n = cell offset + in-cell offset
        r = torch.arange(ph, device=x.device)
        q = torch.arange(pw, device=x.device)
        inner = (torch.arange(C, device=x.device)[:, None, None] * H + r[:, None]) * W + q
        n = ((cy * ph) * W + cx * pw)[:, None, None, None] + inner
        hn1, hn2 = _counter_hashes(C, H, W, x.device)
        key = _mix32_torch(params.seed.to(torch.int64) & _U32)[b][:, None, None, None]
        v = _box_muller(key, hn1[n], hn2[n]).to(x.dtype)
    cells[b, :, cy, :, cx, :] = v
    return out


def _same_format(x):
    if (not x.is_contiguous()) and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


# --------------------------------------------------------------------------------------------------
# Triton launcher
# --------------------------------------------------------------------------------------------------
def _num_warps(block: int) -> int:
    """About 8 values per thread (one 16-byte access of 16-bit values, two of float32). Patch 16 (3 x 16 x 16
    in a block of 1024) gets Triton's default 4 warps; patch 32 (block 4096) 16 warps instead of 4, where
    the ``normal`` fill needs 168 registers per thread (3 blocks, 12 warps per SM) at 4 warps."""
    return max(2, min(16, block // 256))


def patch_erase_triton(x, params: PatchEraseParams, patch_size, fill: str = "zero", inplace: bool = False):
    """Launch the kernel (CUDA tensors, or CPU under ``TRITON_INTERPRET=1``): one program per
    (sample, cell), B * gh * gw programs in one launch."""
    if triton is None:
        raise RuntimeError("patch_erase_triton needs Triton, which is not installed")
    ph, pw = _check(x, params, patch_size, fill)
    B, C, H, W = x.shape
    gh, gw = H // ph, W // pw
    y = x if inplace else torch.empty_like(x, memory_format=_same_format(x))
    if x.numel() == 0:
        return y
    mask = params.mask.reshape(B * gh * gw).to(torch.uint8)
    seed = params.seed.to(torch.int64).contiguous()
    # The mean is rounded to x's dtype by torch (as in the reference), so the kernel only copies it.
    mean = channel_means(x).to(x.dtype).contiguous() if fill == "mean" else seed
    block = max(16, triton.next_power_of_2(C * ph * pw))
    _patch_erase_kernel[(B * gh * gw,)](
        x, y, mask, seed, mean,
        C, H, W, gw, gh * gw,
        *x.stride(), *y.stride(),
        PH=ph, PW=pw, FILL=FILLS.index(fill), COPY=not inplace, BLOCK=block,
        num_warps=_num_warps(block),
    )
    return y


# --------------------------------------------------------------------------------------------------
# torch.library ops and the dispatcher
# --------------------------------------------------------------------------------------------------
@torch.library.custom_op("vitdata::patch_erase", mutates_args=())
def _patch_erase_op(x: torch.Tensor, mask: torch.Tensor, seed: torch.Tensor, ph: int, pw: int,
                    fill: str) -> torch.Tensor:
    return patch_erase_cells(x, PatchEraseParams(mask, seed), (ph, pw), fill, inplace=False)


@_patch_erase_op.register_kernel("cuda")
def _(x, mask, seed, ph, pw, fill):
    return patch_erase_triton(x, PatchEraseParams(mask, seed), (ph, pw), fill, inplace=False)


@_patch_erase_op.register_fake
def _(x, mask, seed, ph, pw, fill):
    return torch.empty_like(x, memory_format=_same_format(x))


@torch.library.custom_op("vitdata::patch_erase_", mutates_args=("x",))
def _patch_erase_inplace_op(x: torch.Tensor, mask: torch.Tensor, seed: torch.Tensor, ph: int, pw: int,
                            fill: str) -> None:
    patch_erase_cells(x, PatchEraseParams(mask, seed), (ph, pw), fill, inplace=True)


@_patch_erase_inplace_op.register_kernel("cuda")
def _(x, mask, seed, ph, pw, fill):
    patch_erase_triton(x, PatchEraseParams(mask, seed), (ph, pw), fill, inplace=True)


@_patch_erase_inplace_op.register_fake
def _(x, mask, seed, ph, pw, fill):
    return None


def patch_erase(x, params: PatchEraseParams, patch_size, fill: str = "zero", inplace: bool = False):
    """Erase the cells in ``params.mask`` of the (B, C, H, W) float batch x with ``fill``.

    patch_size: int or (ph, pw), dividing H and W, with (H/ph, W/pw) == params.grid. Returns a new
    tensor in x's layout, or x itself when ``inplace``. CUDA: one Triton launch; CPU:
    ``patch_erase_cells``. Registered as ``torch.ops.vitdata.patch_erase`` / ``patch_erase_`` for torch.compile."""
    ph, pw = _check(x, params, patch_size, fill)
    if inplace:
        torch.ops.vitdata.patch_erase_(x, params.mask, params.seed, ph, pw, fill)
        return x
    return torch.ops.vitdata.patch_erase(x, params.mask, params.seed, ph, pw, fill)
