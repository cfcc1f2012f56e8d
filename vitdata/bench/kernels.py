"""How fast are the curriculum kernels against their baselines, measured in the same process?

Questions answered (one process, one JSON record):
  1. Low-frequency crop of a (B, 3, 224, 224) batch to 160 (bf16 on GPU): the Triton kernel and the
     torch.matmul form of the same matrices, against the torch.fft path (float32, EfficientTrain's
     route) as the baseline. On CPU (no CUDA, or --small): the matmul form and the float64 reference
     against the torch.fft path, float32, smaller batch; the Triton kernel is not timed (interpreter).
  2. PatchErasing at 224 / patch 16 (ratio 0.25, normal fill): the Triton kernel (in place and out of
     place) against timm's RandomErasing (probability 1, mode 'pixel', i.e. one per-pixel-normal
     rectangle per image, in place) as the baseline. On CPU: the torch reference and the CPU route
     (``patch_erase_cells``) against timm on CPU.
  3. CPU only, the loader's step on a curriculum batch: a uint8 (B, 3, S', S') batch, S' = size * 8/7
     rounded up to the patch (256 for 224, as row 1 of ``vitdata bench loader`` builds it), cropped to
     ``--size``, normalised, float32 out, then PatchErasing with the zero fill in place: the CPU routes
     (the dispatch default: ``lowpass_crop_chunked``, ``patch_erase_cells``) against the whole-batch
     matmul form and the reference they replaced, in the same process, on one intra-op thread as the
     loader runs them on a 2-core host (``--step-threads``).

Each entry: warm-up, then `--repeats` timed repeats of `--iters` calls, synchronised at both ends;
median and spread (min, max, IQR) of the per-call time; images/s; GB/s from the stated bytes model
(compulsory reads + writes); ratio to the baseline's median. Before timing, each implementation's
output is checked against the reference and the max abs error recorded.

With a GPU whose peak memory bandwidth is in ``PEAK_BANDWIDTH_GBS``, each GB/s figure also gets its
percentage of that peak (``gb_per_s_pct_of_peak``).

Output: a table on stdout and a record (``vitdata.bench.record``) at ``--json`` or
``./benchmarks/results/<device>/<YYYY-MM-DD>-kernels.json`` with versions, commit and raw timings.
Run: ``vitdata bench kernels [--small]`` or ``python -P benchmarks/bench_kernels.py``.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from vitdata.bench import record
from vitdata.loader.config import DTYPE_ALIASES, torch_dtype

from .common import load_avg

# Peak memory bandwidth (GB/s, 1e9 bytes/s) by GPU name; the first key found in the name wins.
PEAK_BANDWIDTH_GBS = (
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),            # SXM5
    ("GH200", 4000.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-PCIE-40GB", 1555.0),
    ("A100-SXM4-40GB", 1555.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("V100", 900.0),
    ("T4", 320.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
)


def peak_bandwidth_gbs(gpu_name: str | None) -> float | None:
    """Peak memory bandwidth of ``gpu_name`` in GB/s, or None when the GPU is not in the table."""
    if not gpu_name:
        return None
    name = gpu_name.upper()
    for key, gbs in PEAK_BANDWIDTH_GBS:
        if key.upper() in name:
            return gbs
    return None


def annotate_bandwidth(rec: dict, gpu: str | None) -> int:
    """Add ``gb_per_s_pct_of_peak`` beside every ``gb_per_s`` in the record's sections (in place) and
    ``peak_bandwidth_gbs``; returns how many figures were annotated. Without a known GPU nothing is added."""
    peak = peak_bandwidth_gbs(gpu)
    if peak is None:
        return 0
    n = 0
    for section in ("lowpass_crop", "patch_erase"):
        for row in rec.get(section, []):
            if isinstance(row.get("gb_per_s"), (int, float)):
                row["gb_per_s_pct_of_peak"] = 100.0 * row["gb_per_s"] / peak
                n += 1
    rec["peak_bandwidth_gbs"] = peak
    return n


def _parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 256 GPU, 32 CPU)")
    p.add_argument("--size", type=int, default=224, help="input side (pixels)")
    p.add_argument("--crop", type=int, default=160, help="low-pass crop output side (pixels)")
    p.add_argument("--dtype", choices=sorted(DTYPE_ALIASES), default=None,
                   help="input/output dtype of both ops (default bf16 GPU, fp32 CPU)")
    p.add_argument("--patch", type=int, default=16, help="PatchErasing patch size (pixels)")
    p.add_argument("--ratio", type=float, default=0.25, help="PatchErasing fraction of cells erased")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 10 GPU, 5 CPU)")
    p.add_argument("--iters", type=int, default=None, help="calls per repeat (default 20 GPU, 2 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5 GPU, 1 CPU)")
    p.add_argument("--small", action="store_true", help="CPU-sized run (automatic without CUDA)")
    p.add_argument("--device", default=None, help="cuda or cpu (default cuda when available)")
    p.add_argument("--json", help="record file or directory (default ./benchmarks/results/<device>/<date>-kernels.json)")
    p.add_argument("--step-threads", type=int, default=1,
                   help="intra-op threads of the CPU loader-step rows (default 1, as the loader on 2 cores)")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    return p


# ------------------------------------------------------------------------------------------------
def _summary(name, times, batch, nbytes, note):
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    med = statistics.median(times)
    return {"name": name, "note": note, "median_s": med, "min_s": min(times), "max_s": max(times),
            "iqr_s": q[2] - q[0], "images_per_s": batch / med, "gb_per_s": nbytes / med / 1e9,
            "bytes_model": nbytes, "times_s": times}


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
        from vitdata.kernels.lowpass_cpu import crop_route, lowpass_crop_chunked

        pick = crop_route(N, N, n, n)
        for route in ("fft", "gemm"):
            impls.append((f"chunked CPU route ({route})", (lambda r: lambda: lowpass_crop_chunked(x, n, route=r))(route),
                          "dispatch default on CPU" if route == pick else ""))
        impls.append(("reference (torch.fft fp64)", lambda: lowpass_crop_ref(x, n), "ground truth"))
    exact = lowpass_crop_ref(x[:8], n, out_dtype=torch.float64)
    rows = []
    for name, fn, note in impls:
        err = (fn()[:8].double() - exact).abs().max().item()
        row = _summary(name, record.measure(fn, **timing)["times_s"], B, nbytes, note)
        row["max_abs_err"] = float(f"{err:.3g}")
        rows.append(row)
    del x
    return rows


def bench_erase(args, device, dtype, timing):
    from timm.data.random_erasing import RandomErasing

    from vitdata.kernels import patch_erase_cells, patch_erase_ref, patch_erase_triton, sample_patch_erase_params

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
               "", args.ratio * numel * item),
              ("torch ref out of place (normal)", lambda: patch_erase_ref(x, params, p, "normal"), "",
               2 * numel * item)]
    if device.type == "cpu":
        impls += [("cpu route in place (normal)", lambda: patch_erase_cells(x, params, p, "normal", inplace=True),
                   "dispatch default on CPU", args.ratio * numel * item),
                  ("cpu route out of place (normal)", lambda: patch_erase_cells(x, params, p, "normal"), "",
                   2 * numel * item)]
    # Check every implementation first, on copies: the in-place ones change x while being timed.
    ref = patch_erase_ref(x, params, p, "normal")
    errs = {}
    impl_of = {"triton": patch_erase_triton, "torch ref": patch_erase_ref, "cpu route": patch_erase_cells}
    for name, fn, _, _ in impls:
        kind = next((k for k in impl_of if name.startswith(k)), None)
        if kind is not None:
            inplace = "in place" in name
            y = impl_of[kind](x.clone() if inplace else x, params, p, "normal", inplace=inplace)
            errs[name] = float(f"{(y.float() - ref.float()).abs().max().item():.3g}")
    del ref
    rows = []
    for name, fn, note, nbytes in impls:
        row = _summary(name, record.measure(fn, **timing)["times_s"], B, nbytes, note)
        if name in errs:
            row["max_abs_err"] = errs[name]
        rows.append(row)
    del x
    return rows


def bench_loader_step(args, timing):
    """Section 3 (CPU): the loader's low-pass step, old path against the CPU routes, in one process."""
    import math

    from vitdata.kernels import (lowpass_crop_chunked, lowpass_crop_matmul, lowpass_crop_ref, patch_erase_cells,
                                 patch_erase_ref, sample_patch_erase_params)

    B, n, p = args.batch, args.size, args.patch
    N = int(math.ceil(n * 8 / 7 / p) * p)
    x = torch.randint(0, 256, (B, 3, N, N), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    norm = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], out_dtype=torch.float32)
    params = sample_patch_erase_params(B, (n // p, n // p), args.ratio, torch.Generator().manual_seed(0))

    def step(crop, erase):
        return lambda: erase(crop(x, n, **norm), params, p, "zero", inplace=True)

    impls = [("matmul form + torch ref", step(lowpass_crop_matmul, patch_erase_ref), "baseline: the loader's old path"),
             ("chunked + cpu route", step(lowpass_crop_chunked, patch_erase_cells), "dispatch default on CPU"),
             ("matmul form (crop only)", lambda: lowpass_crop_matmul(x, n, **norm), ""),
             ("chunked (crop only)", lambda: lowpass_crop_chunked(x, n, **norm), "")]
    exact = lowpass_crop_ref(x[:8], n, out_dtype=torch.float64, mean=norm["mean"], std=norm["std"])
    nbytes = B * 3 * (N * N + 4 * n * n)        # read uint8, write float32 (the erase writes a fraction again)
    rows, before = [], torch.get_num_threads()
    torch.set_num_threads(min(before, args.step_threads))
    try:
        for name, fn, note in impls:
            row = _summary(name, record.measure(fn, **timing)["times_s"], B, nbytes, note)
            if "crop only" in name:
                row["max_abs_err"] = float(f"{(fn()[:8].double() - exact).abs().max().item():.3g}")
            rows.append(row)
    finally:
        torch.set_num_threads(before)
    return rows, N


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = _parser(prog).parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    small = args.small or device.type != "cuda"
    args.batch = args.batch or (32 if small else 256)
    dtype = torch_dtype(args.dtype or ("fp32" if device.type == "cpu" else "bf16"))
    timing = {"warmup": args.warmup if args.warmup is not None else (1 if small else 5),
              "repeats": args.repeats or (5 if small else 10),
              "iters": args.iters or (2 if small else 20)}
    if args.size % args.patch:
        raise SystemExit(f"--patch {args.patch} must divide --size {args.size}")
    env = dict(record.environment(), torch_threads=torch.get_num_threads(), load_avg_1m_start=load_avg())
    if device.type == "cuda":
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
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
    rec = {"environment": env, "settings": settings, "lowpass_crop": low, "patch_erase": erase}
    if device.type == "cpu":
        step, N = bench_loader_step(args, timing)
        _print_table(f"the loader's low-pass step: uint8 {args.batch}x3x{N}x{N} -> {args.size}, normalised, float32, "
                     f"+ PatchErasing (zero, in place), {min(env['torch_threads'], args.step_threads)} thread(s)",
                     step, "matmul form + torch ref")
        rec["loader_step"] = step
    env["load_avg_1m_end"] = load_avg()
    if env["gpu"] is None:
        print("\nno GPU: GB/s above are host-memory figures; no percentage of a GPU's bandwidth")
    elif annotate_bandwidth(rec, env["gpu"]) == 0:
        print(f"\n{env['gpu']}: peak memory bandwidth not in PEAK_BANDWIDTH_GBS; no percentages")
    else:
        print(f"\npercent of {env['gpu']}'s peak memory bandwidth ({rec['peak_bandwidth_gbs']:,.0f} GB/s):")
        for section in ("lowpass_crop", "patch_erase"):
            for row in rec[section]:
                print(f"  {section:<13} {row['name']:<32} {row['gb_per_s']:>9.1f} GB/s  "
                      f"{row['gb_per_s_pct_of_peak']:>5.1f}%")
    if not args.no_save:
        print(f"\nrecord: {record.write_record('kernels', rec, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
