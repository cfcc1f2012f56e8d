"""How much does the difficulty oracle cost a training run?

Two figures, each against its target:
1. ``report()`` overhead per step: batch 256 on CPU; batch 1024 on CUDA when there is a GPU (host clock over
   ``--steps`` calls, the device synchronised before and after; target < 0.5 ms on an H100). Baseline
   measured in the same run: the per-sample cross-entropy the trainer computes anyway for that batch
   (``reduction="none"``, 1000 classes).
2. Building the next epoch for N = 1.28 M samples with the ``weighted`` policy: ``end_epoch`` (fold of a
   full epoch of pending reports, metrics, plan) plus the sampler's order for this rank (target < 1 s
   on the 2-core CPU box).

Median and spread of several repeats after warm-up. Writes
``benchmarks/results/<device>/<date>-oracle.json`` with versions, commit, settings and raw timings.

    vitdata bench oracle [--samples 1281167] [--repeats 5] [--steps 200] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from vitdata.bench import record
from vitdata.oracle.difficulty import DifficultyOracle
from vitdata.data.sampler import Sampler

REPORT_TARGET_MS = 0.5
PLAN_TARGET_S = 1.0
NUM_CLASSES = 1000


def _stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "raw": xs}


def bench_report(device: torch.device, batch: int, num_samples: int, steps: int, repeats: int) -> dict:
    """Per-step report() time: losses only, with logits + labels, and the cross-entropy baseline."""
    gen = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(0, num_samples, (batch,), device=device, generator=gen)
    logits = torch.randn(batch, NUM_CLASSES, device=device, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device, generator=gen)
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    cases = {
        "baseline_cross_entropy": lambda o: torch.nn.functional.cross_entropy(logits, labels, reduction="none"),
        "report_losses": lambda o: o.report(ids, losses),
        "report_logits": lambda o: o.report(ids, losses, logits=logits, labels=labels),
    }
    out = {}
    for name, case in cases.items():
        times = []
        for _ in range(repeats + 1):                      # the first repeat is warm-up
            o = DifficultyOracle(num_samples, "uniform", device=device)
            o.reserve(batch * steps)                      # buffer growth is amortised; time the steady state
            times.append(record.measure(lambda: case(o), warmup=0, repeats=1, iters=steps)["median_s"] * 1e3)
            del o
        out[name] = _stats(times[1:])
    return out


def bench_plan(num_samples: int, batch: int, repeats: int, device: torch.device) -> dict:
    """end_epoch (fold of N pending reports + metrics + weighted plan) and the next epoch's order."""
    gen = torch.Generator().manual_seed(0)
    difficulty = torch.rand(num_samples, generator=gen)
    parts = {"fold_metrics_plan_s": [], "order_s": [], "total_s": []}
    o = DifficultyOracle(num_samples, "weighted", device=device)
    sampler = Sampler(num_samples, batch, seed=0)
    for epoch in range(repeats + 1):
        sampler.set_plan(o.plan)
        order = torch.from_numpy(sampler.epoch_ids(epoch).ravel().copy())
        loss = -torch.log((1.0 - difficulty[order]).clamp(min=1e-3))
        chunk = 1 << 16                                   # untimed: one epoch of reports, in big chunks
        for i in range(0, order.numel(), chunk):
            o.report(order[i:i + chunk].to(device), loss[i:i + chunk].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        plan = o.end_epoch(epoch)
        t1 = time.perf_counter()
        sampler.set_plan(plan)
        sampler.epoch_ids(epoch + 1)
        t2 = time.perf_counter()
        if epoch:                                         # epoch 0 is warm-up (and its plan is the first)
            parts["fold_metrics_plan_s"].append(t1 - t0)
            parts["order_s"].append(t2 - t1)
            parts["total_s"].append(t2 - t0)
    return {k: _stats(v) for k, v in parts.items()}


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=1_281_167, help="N, the dataset size (ImageNet-1K: 1,281,167)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (after one warm-up)")
    ap.add_argument("--steps", type=int, default=200, help="report() calls per repeat")
    ap.add_argument("--batch", type=int, default=256, help="per-rank batch for the sampler's order")
    ap.add_argument("--json", help="record file or directory (default ./benchmarks/results/<device>/<date>-oracle.json)")
    ap.add_argument("--no-save", action="store_true", help="print only")
    args = ap.parse_args(argv)

    cpu = torch.device("cpu")
    rec = {"settings": {"samples": args.samples, "repeats": args.repeats, "steps": args.steps,
                           "batch_for_order": args.batch, "num_classes": NUM_CLASSES, "policy": "weighted"},
              "targets": {"report_ms_cuda_1024": REPORT_TARGET_MS, "plan_and_order_s": PLAN_TARGET_S}}
    cuda = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    rec["environment"] = dict(record.environment(), torch_threads=torch.get_num_threads(),
                                 load_average_1m=os.getloadavg()[0])
    results = {"report_cpu_256": bench_report(cpu, 256, args.samples, args.steps, args.repeats)}
    if cuda is not None:
        results["report_cuda_1024"] = bench_report(cuda, 1024, args.samples, args.steps, args.repeats)
    results["plan_cpu"] = bench_plan(args.samples, args.batch, args.repeats, cpu)
    if cuda is not None:
        results["plan_cuda_table"] = bench_plan(args.samples, args.batch, args.repeats, cuda)
    rec["results"] = results
    rec["environment"]["load_average_1m_after"] = os.getloadavg()[0]   # other work on the box skews CPU timings

    print(f"oracle benchmark, N = {args.samples:,}, {args.repeats} repeats (median [min, max]); "
          f"load average {rec['environment']['load_average_1m']:.1f} -> "
          f"{rec['environment']['load_average_1m_after']:.1f} on {os.cpu_count()} CPUs")
    for key, res in results.items():
        if key.startswith("report"):
            base = res["baseline_cross_entropy"]["median"]
            for case in ("report_losses", "report_logits"):
                r = res[case]
                line = (f"  {key:17s} {case:14s} {r['median']:.4f} ms/step [{r['min']:.4f}, {r['max']:.4f}]"
                        f"  = {r['median'] / base:.2f}x cross-entropy ({base:.4f} ms)")
                if key == "report_cuda_1024":
                    line += f"; {r['median'] / REPORT_TARGET_MS:.2f}x the {REPORT_TARGET_MS} ms target"
                print(line)
        else:
            t, f, o = res["total_s"], res["fold_metrics_plan_s"], res["order_s"]
            print(f"  {key:17s} end_epoch {f['median']:.3f} s + order {o['median']:.3f} s = {t['median']:.3f} s "
                  f"[{t['min']:.3f}, {t['max']:.3f}]; {t['median'] / PLAN_TARGET_S:.2f}x the {PLAN_TARGET_S} s target")

    plan = results["plan_cpu"]["total_s"]["median"]
    rec["headline"] = [
        {"measured": f"oracle report(), batch 256, losses only ({args.steps} steps)",
         "figure": f"{results['report_cpu_256']['report_losses']['median']:.3f} ms/step",
         "compared": f"{results['report_cpu_256']['report_losses']['median'] / results['report_cpu_256']['baseline_cross_entropy']['median']:.2f}x cross-entropy"},
        {"measured": f"oracle end_epoch + next order, weighted, N={args.samples:,}",
         "figure": f"{plan:.3f} s", "compared": f"{plan / PLAN_TARGET_S:.2f}x the {PLAN_TARGET_S:g} s target"}]
    if not args.no_save:
        print(f"wrote {record.write_record('oracle', rec, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
