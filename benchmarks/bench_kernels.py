"""How fast are the curriculum kernels against their baselines, measured in the same process?

Questions answered (one process, one JSON record):
  1. Low-frequency crop of a (B, 3, 224, 224) batch to 160 (bf16 on GPU): the Triton kernel and the
     torch.matmul form of the same matrices, against the torch.fft path (float32, EfficientTrain's
     route) as the baseline. On CPU (no CUDA, or --small): the matmul form and the float64 reference
     against the torch.fft path, float32, smaller batch; the Triton kernel is not timed (interpreter).
  2. PatchErasing at 224 / patch 16 (ratio 0.25, normal fill): the Triton kernel (in place and out of
     place) against timm's RandomErasing (probability 1, mode 'pixel', i.e. one per-pixel-normal
     rectangle per image, in place) as the baseline. On CPU: the torch reference against timm on CPU.

Each entry: warm-up, then `--repeats` timed repeats of `--iters` calls, synchronised at both ends;
median and spread (min, max, IQR) of the per-call time; images/s; GB/s from the stated bytes model
(compulsory reads + writes); ratio to the baseline's median. Before timing, each implementation's
output is checked against the reference and the max abs error recorded.

Output: a table on stdout and benchmarks/results/<device>/<YYYY-MM-DD>-kernels.json (device = GPU
name slug, or "cpu") with GPU, driver, CUDA, torch, triton, timm versions, git commit and raw timings.
Run: `python -P benchmarks/bench_kernels.py [--small]`, or later `vitdata bench kernels`.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 256 GPU, 32 CPU)")
    p.add_argument("--size", type=int, default=224, help="input side (pixels)")
    p.add_argument("--crop", type=int, default=160, help="low-pass crop output side (pixels)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="input/output dtype of both ops (default bf16 GPU, fp32 CPU)")
    p.add_argument("--patch", type=int, default=16, help="PatchErasing patch size (pixels)")
    p.add_argument("--ratio", type=float, default=0.25, help="PatchErasing fraction of cells erased")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 10 GPU, 5 CPU)")
    p.add_argument("--iters", type=int, default=None, help="calls per repeat (default 20 GPU, 2 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5 GPU, 1 CPU)")
    p.add_argument("--small", action="store_true", help="CPU-sized run (automatic without CUDA)")
    p.add_argument("--device", default=None, help="cuda or cpu (default cuda when available)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="results root")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    return p


# ------------------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, warmup, repeats, iters):
    for _ in range(warmup):
        fn()
    _sync(device)
    per_call = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(device)
        per_call.append((time.perf_counter() - t0) / iters)
    return per_call


def _summary(name, times, batch, nbytes, note):
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    med = statistics.median(times)
    return {"name": name, "note": note, "median_s": med, "min_s": min(times), "max_s": max(times),
            "iqr_s": q[2] - q[0], "images_per_s": batch / med, "gb_per_s": nbytes / med / 1e9,
            "bytes_model": nbytes, "times_s": times}


def _env(device):
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
           "torch_threads": torch.get_num_threads()}
    for mod in ("triton", "timm", "numpy"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is recorded, not fatal
            env[mod] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            env["driver"] = None
    else:
        env["gpu"] = None
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                           timeout=30).stdout.strip() or None
        env["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                                               text=True, timeout=30).stdout.strip())
    except Exception:  # noqa: BLE001
        env["git_commit"], env["git_dirty"] = None, None
    return env


def _slug(env):
    return re.sub(r"[^a-z0-9]+", "-", env["gpu"].lower()).strip("-") if env.get("gpu") else "cpu"


def _print_table(title, rows, baseline):
    base = next(r for r in rows if r["name"] == baseline)["median_s"]
    print(f"\n{title}")
    print(f"  {'implementation':<28}{'median ms':>11}{'min..max ms':>18}{'img/s':>11}{'GB/s':>9}{'vs base':>9}  err")
    for r in rows:
        r["speedup_vs_baseline"] = base / r["median_s"]
        print(f"  {r['name']:<28}{r['median_s'] * 1e3:>11.3f}{r['min_s'] * 1e3:>8.3f}..{r['max_s'] * 1e3:<8.3f}"
              f"{r['images_per_s']:>11.0f}{r['gb_per_s']:>9.2f}{r['speedup_vs_baseline']:>8.2f}x  "
              f"{r.get('max_abs_err', '')}")


# ------------------------------------------------------------------------------------------------
def bench_lowpass(args, device, dtype, timing):
    from vitdata.kernels import lowpass_crop_fft, lowpass_crop_matmul, lowpass_crop_ref, lowpass_crop_triton

    B, N, n = args.batch, args.size, args.crop
    g = torch.Generator(device=device).manual_seed(0)
    x = (torch.rand((B, 3, N, N), generator=g, device=device) * 4 - 2).to(dtype)
    item = x.element_size()
    nbytes = B * 3 * (N * N + n * n) * item
    impls = [("torch.fft path (fp32)", lambda: lowpass_crop_fft(x, n), "baseline")]
    impls.append(("matmul form (fp32 compute)", lambda: lowpass_crop_matmul(x, n), ""))
    if device.type == "cuda":
        impls.append(("triton kernel", lambda: lowpass_crop_triton(x, n), "dispatch default on CUDA"))
    else:
        impls.append(("reference (torch.fft fp64)", lambda: lowpass_crop_ref(x, n), "ground truth"))
    exact = lowpass_crop_ref(x[:8], n, out_dtype=torch.float64)
    rows = []
    for name, fn, note in impls:
        err = (fn()[:8].double() - exact).abs().max().item()
        row = _summary(name, _time(fn, device, **timing), B, nbytes, note)
        row["max_abs_err"] = float(f"{err:.3g}")
        rows.append(row)
    del x
    return rows


def bench_erase(args, device, dtype, timing):
    from timm.data.random_erasing import RandomErasing

    from vitdata.kernels import patch_erase_ref, patch_erase_triton, sample_patch_erase_params

    B, N, p = args.batch, args.size, args.patch
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((B, 3, N, N), generator=g, device=device).to(dtype)
    params = sample_patch_erase_params(B, (N // p, N // p), args.ratio, torch.Generator().manual_seed(0),
                                       device=device)
    item = x.element_size()
    numel = x.numel()
    timm_re = RandomErasing(probability=1.0, mode="pixel", device=device.type)
    # timm draws one rectangle of 2..33% of the image (mean ~17.5%) per image, written once.
    impls = [("timm RandomErasing (pixel)", lambda: timm_re(x), "baseline, in place", 0.175 * numel * item)]
    if device.type == "cuda":
        impls += [("triton in place (normal)", lambda: patch_erase_triton(x, params, p, "normal", inplace=True),
                   "dispatch default on CUDA", args.ratio * numel * item),
                  ("triton out of place (normal)", lambda: patch_erase_triton(x, params, p, "normal"), "",
                   2 * numel * item)]
    impls += [("torch ref in place (normal)", lambda: patch_erase_ref(x, params, p, "normal", inplace=True),
               "dispatch default on CPU", args.ratio * numel * item),
              ("torch ref out of place (normal)", lambda: patch_erase_ref(x, params, p, "normal"), "",
               2 * numel * item)]
    # Check every implementation first, on copies: the in-place ones change x while being timed.
    ref = patch_erase_ref(x, params, p, "normal")
    errs = {}
    for name, fn, _, _ in impls:
        if name.startswith(("triton", "torch ref")):
            inplace = "in place" in name
            y = (patch_erase_triton if name.startswith("triton") else patch_erase_ref)(
                x.clone() if inplace else x, params, p, "normal", inplace=inplace)
            errs[name] = float(f"{(y.float() - ref.float()).abs().max().item():.3g}")
    del ref
    rows = []
    for name, fn, note, nbytes in impls:
        row = _summary(name, _time(fn, device, **timing), B, nbytes, note)
        if name in errs:
            row["max_abs_err"] = errs[name]
        rows.append(row)
    del x
    return rows


def main(argv=None, prog=None) -> int:
    args = _parser(prog).parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    small = args.small or device.type != "cuda"
    args.batch = args.batch or (32 if small else 256)
    dtype = DTYPES[args.dtype or ("fp32" if device.type == "cpu" else "bf16")]
    timing = {"warmup": args.warmup if args.warmup is not None else (1 if small else 5),
              "repeats": args.repeats or (5 if small else 10),
              "iters": args.iters or (2 if small else 20)}
    if args.size % args.patch:
        raise SystemExit(f"--patch {args.patch} must divide --size {args.size}")
    env = _env(device)
    settings = {"device": str(device), "small": small, "batch": args.batch, "size": args.size, "crop": args.crop,
                "dtype": str(dtype).replace("torch.", ""), "patch": args.patch, "ratio": args.ratio, **timing,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    print(f"vitdata kernel benchmark on {env['gpu'] or 'CPU (' + str(env['torch_threads']) + ' threads)'}; "
          f"torch {env['torch']}, triton {env['triton']}, timm {env['timm']}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    if device.type != "cuda":
        print("note: CPU run; these are not GPU figures (the Triton kernels are not timed on CPU)")
    low = bench_lowpass(args, device, dtype, timing)
    _print_table(f"low-pass crop {args.batch}x3x{args.size}x{args.size} -> {args.crop} ({settings['dtype']})",
                 low, "torch.fft path (fp32)")
    erase = bench_erase(args, device, dtype, timing)
    _print_table(f"PatchErasing {args.batch}x3x{args.size}x{args.size}, patch {args.patch}, ratio {args.ratio} "
                 f"({settings['dtype']})", erase, "timm RandomErasing (pixel)")
    record = {"benchmark": "kernels", "date": _dt.datetime.now().isoformat(timespec="seconds"), "env": env,
              "settings": settings, "lowpass_crop": low, "patch_erase": erase}
    if not args.no_save:
        from vitdata.io import atomic_write

        path = args.results / _slug(env) / f"{_dt.date.today().isoformat()}-kernels.json"
        atomic_write(path, (json.dumps(record, indent=1) + "\n").encode())
        print(f"\nwrote {os.path.relpath(path, Path.cwd())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
