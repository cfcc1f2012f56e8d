"""Compile every Triton kernel of vitdata.kernels for a CUDA GPU, without one (run by test_compile_sm90.py).

    python -P compile_worker.py [--arch 90] [--jobs N]

Must run without TRITON_INTERPRET (the interpreter replaces ``@triton.jit``). Each case calls the real
launcher on meta tensors of the real shapes and strides (a meta tensor's address is 0 plus its offset, so
16-byte alignment is what a fresh CUDA allocation has). The launch is recorded instead of run, then
replayed through ``warmup`` under a driver that only names the target: for the autotuned kernel once per
candidate the autotuner would time for that shape. So the specialisation (argument dtypes, unit strides,
sizes divisible by 16, constexprs, num_warps, num_stages) is the one a GPU launch gets. Triton runs its
frontend, the TTIR / TTGIR / LLVM passes and its bundled ptxas; ptxas's own report (``-v``) gives
registers and spills.

Prints one JSON object per line: ``{"unavailable": reason}`` when this Triton cannot compile for the
target without a device, else one line per compiled kernel (case, config, regs, spill_stores,
spill_loads, stack, shared, ptx / cubin sizes, mma versions, vector loads / stores, seconds) or with ``error``.
"""
import argparse
import contextlib
import importlib
import io
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from unittest import mock

if os.environ.get("TRITON_INTERPRET"):
    sys.exit("compile_worker.py needs a process without TRITON_INTERPRET")
os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # Triton prints ptxas -v output (registers, spills) to stdout
os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="vitdata-compile-"))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.driver import DriverBase  # noqa: E402
from triton.runtime import driver as triton_driver  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402

# The modules, not the same-named functions vitdata.kernels exports (``import a.b as m`` would give those).
LP = importlib.import_module("vitdata.kernels.lowpass")
PE = importlib.import_module("vitdata.kernels.patch_erase")

PTXAS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads.*?"
                   r"Used (\d+) registers", re.S)


class TargetOnlyDriver(DriverBase):
    """Enough of a driver for ``warmup`` (compile, never launch): names the target, nothing else."""

    def __init__(self, target: GPUTarget):
        self.target = target

    @classmethod
    def is_active(cls):
        return True

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("meta")

    def map_python_to_cpp_type(self, ty):
        raise NotImplementedError("compile-only driver")

    def get_benchmarker(self):
        raise NotImplementedError("compile-only driver: nothing can be timed")


class Recorder:
    """Stands in for a kernel object: ``kernel[grid](*args, **kwargs)`` is recorded, not launched."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((self.kernel, grid, args, kwargs))


def record(module, names, launcher, *args, **kwargs):
    recorders = {n: Recorder(getattr(module, n)) for n in names}
    with contextlib.ExitStack() as stack:
        for n, r in recorders.items():
            stack.enter_context(mock.patch.object(module, n, r))
        launcher(*args, **kwargs)
    return [launch for r in recorders.values() for launch in r.launches]


def expand(kernel, args, kwargs):
    """(jit function, kwargs) per compiled variant; an autotuner gives one per candidate, as its warmup does."""
    if isinstance(kernel, Autotuner):
        kernel.nargs = dict(zip(kernel.arg_names, args))
        try:
            return [(kernel.fn, {**kwargs, **c.all_kwargs()}) for c in kernel.prune_configs(kwargs)]
        finally:
            kernel.nargs = None
    return [(kernel, kwargs)]


def meta(shape, dtype, layout="nchw"):
    x = torch.empty(shape, dtype=dtype, device="meta")
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "noncontig":  # a crop of a larger batch: offset address, row stride not a multiple of 16
        B, C, H, W = shape
        return torch.empty((B, C, H + 3, W + 5), dtype=dtype, device="meta")[:, :, 1:1 + H, 2:2 + W]
    return x


U8, F32, F16, BF16 = torch.uint8, torch.float32, torch.float16, torch.bfloat16
NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])

# (case, input (B, C, H, W), output size, input dtype, output dtype, layout, normalise)
LOWPASS = [
    ("224->160 bf16->bf16 NCHW norm", (256, 3, 224, 224), 160, BF16, BF16, "nchw", True),
    ("224->160 bf16->bf16 channels_last", (256, 3, 224, 224), 160, BF16, BF16, "channels_last", False),
    ("224->160 f32->f32 NCHW", (256, 3, 224, 224), 160, F32, F32, "nchw", False),
    ("224->160 f32->f32 channels_last", (256, 3, 224, 224), 160, F32, F32, "channels_last", False),
    ("224->160 f16->f16 NCHW", (256, 3, 224, 224), 160, F16, F16, "nchw", False),
    ("224->160 u8->bf16 channels_last norm", (256, 3, 224, 224), 160, U8, BF16, "channels_last", True),
    ("224->160 u8->f32 NCHW norm", (256, 3, 224, 224), 160, U8, F32, "nchw", True),
    ("223->161 bf16->bf16 NCHW", (256, 3, 223, 223), 161, BF16, BF16, "nchw", False),
    ("223->161 f32->f32 channels_last", (256, 3, 223, 223), 161, F32, F32, "channels_last", False),
    ("224x200->96x111 f16->f32 noncontig", (8, 3, 224, 200), (96, 111), F16, F32, "noncontig", False),
    ("64->33 u8->f16 NCHW norm", (8, 3, 64, 64), 33, U8, F16, "nchw", True),
    ("64->33 f32->bf16 channels_last", (8, 3, 64, 64), 33, F32, BF16, "channels_last", False),
    ("512->320 bf16->bf16 NCHW", (8, 3, 512, 512), 320, BF16, BF16, "nchw", False),
    ("512->320 f32->f32 NCHW", (8, 3, 512, 512), 320, F32, F32, "nchw", False),
    # 32 px high and below (BLOCK_H 16 / 32): stage 1's tile is too short for wgmma, so both stages use mma.sync
    ("32->16 bf16->bf16 NCHW norm", (64, 3, 32, 32), 16, BF16, BF16, "nchw", True),
    ("32->17 f32->f32 channels_last", (64, 3, 32, 32), 17, F32, F32, "channels_last", False),
    ("17x23->9x11 u8->f16 noncontig norm", (8, 3, 17, 23), (9, 11), U8, F16, "noncontig", True),
    ("16->8 u8->bf16 channels_last norm", (256, 3, 16, 16), 8, U8, BF16, "channels_last", True),
]

# (case, input (B, C, H, W), patch, dtype, layout, fill, in place)
PATCH_ERASE = [
    ("224/16 f32 NCHW zero in-place", (256, 3, 224, 224), 16, F32, "nchw", "zero", True),
    ("224/16 f16 channels_last zero in-place", (256, 3, 224, 224), 16, F16, "channels_last", "zero", True),
    ("224/16 bf16 NCHW zero", (256, 3, 224, 224), 16, BF16, "nchw", "zero", False),
    ("224/16 f32 channels_last mean", (256, 3, 224, 224), 16, F32, "channels_last", "mean", False),
    ("224/16 bf16 NCHW normal", (256, 3, 224, 224), 16, BF16, "nchw", "normal", False),
    ("224/16 f16 channels_last normal in-place", (256, 3, 224, 224), 16, F16, "channels_last", "normal", True),
    ("224/14 f32 NCHW normal", (64, 3, 224, 224), 14, F32, "nchw", "normal", False),
    ("224/32 bf16 NCHW normal", (64, 3, 224, 224), 32, BF16, "nchw", "normal", False),
    ("96/(8,4) f16 noncontig mean", (4, 3, 96, 96), (8, 4), F16, "noncontig", "mean", False),
]


def lowpass_jobs():
    for case, shape, size, dt, out, layout, norm in LOWPASS:
        x = meta(shape, dt, layout)
        kw = NORM if norm else {}
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        for kernel, grid, args, kwargs in record(LP, ["_lowpass_crop_kernel", "_lowpass_crop_tuned"],
                                                 LP.lowpass_crop_triton, x, size, out_dtype=out,
                                                 memory_format=fmt, **kw):
            for fn, kws in expand(kernel, args, kwargs):
                yield case, fn, grid, args, kws


def patch_erase_jobs():
    for case, shape, patch, dt, layout, fill, inplace in PATCH_ERASE:
        x = meta(shape, dt, layout)
        ph, pw = (patch, patch) if isinstance(patch, int) else patch
        B, _, H, W = shape
        params = PE.PatchEraseParams(torch.empty((B, H // ph, W // pw), dtype=torch.bool, device="meta"),
                                     torch.empty((B,), dtype=torch.int64, device="meta"))
        for kernel, grid, args, kwargs in record(PE, ["_patch_erase_kernel"], PE.patch_erase_triton,
                                                 x, params, patch, fill, inplace):
            for fn, kws in expand(kernel, args, kwargs):
                yield case, fn, grid, args, kws


def describe(fn, kwargs) -> str:
    consts = " ".join(f"{k}={v}" for k, v in kwargs.items() if k.startswith("BLOCK") or k in ("PH", "PW"))
    return f"{consts} num_warps={kwargs.get('num_warps', 4)} num_stages={kwargs.get('num_stages', 3)}"


JOBS = []


def compile_one(i: int) -> dict:
    case, fn, grid, args, kwargs = JOBS[i]
    row = {"kernel": fn.__name__, "case": case, "config": describe(fn, kwargs)}
    log = io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            ck = fn.warmup(*args, grid=grid, **kwargs)
    except Exception as e:  # noqa: BLE001 - reported per kernel, the test names it
        row["error"] = f"{type(e).__name__}: {e}"[-3000:]
        return row
    m = PTXAS.search(log.getvalue())
    ttgir = ck.asm.get("ttgir", "")
    row.update(
        seconds=round(time.perf_counter() - t0, 2),
        regs=int(m.group(4)) if m else None,
        stack=int(m.group(1)) if m else None,
        spill_stores=int(m.group(2)) if m else None,
        spill_loads=int(m.group(3)) if m else None,
        shared=ck.metadata.shared,
        num_warps=ck.metadata.num_warps,
        num_stages=ck.metadata.num_stages,
        ptx_bytes=len(ck.asm.get("ptx", "")),
        cubin_bytes=len(ck.asm.get("cubin", b"")),
        mma=sorted(set(re.findall(r"versionMajor = (\d+)", ttgir))),
        vector_ldst=bool(re.search(r"\b(ld|st)\.global(\.\w+)*\.v[24]\.", ck.asm.get("ptx", ""))),
        target=f"{ck.metadata.target.backend}:{ck.metadata.target.arch}",
    )
    return row


@triton.jit
def _probe_kernel(x_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs) + 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for H100 (sm_90)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    a = p.parse_args(argv)
    triton_driver.set_active(TargetOnlyDriver(GPUTarget("cuda", a.arch, 32)))
    try:  # can this Triton build compile for the target at all, without a device?
        with contextlib.redirect_stdout(io.StringIO()):
            ck = _probe_kernel.warmup(torch.empty(16, device="meta"), BLOCK=16, grid=(1,))
        if not ck.asm.get("cubin"):
            raise RuntimeError("compilation produced no cubin")
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"unavailable": f"{type(e).__name__}: {e}"[-2000:]}), flush=True)
        return 0
    JOBS.extend(lowpass_jobs())
    JOBS.extend(patch_erase_jobs())
    # Longest first (tf32x3 and 512-row tiles take several seconds each), so the processes finish together.
    order = sorted(range(len(JOBS)), key=lambda i: -(JOBS[i][4].get("BLOCK_H", 0)
                                                   * (3 if JOBS[i][4].get("INPUT_PRECISION") == "tf32x3" else 1)))
    if a.jobs > 1:  # fork: the children inherit JOBS and the driver; nothing touches CUDA
        with ProcessPoolExecutor(a.jobs, mp_context=get_context("fork")) as pool:
            rows = dict(zip(order, pool.map(compile_one, order)))
    else:
        rows = {i: compile_one(i) for i in order}
    for i in range(len(JOBS)):
        print(json.dumps(rows[i]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
