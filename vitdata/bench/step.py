"""``vitdata bench step``: what fraction of a ViT training step waits for data when vitdata feeds it, against
a synthetic batch made in advance, in the same process?

Per timed step: ``batch = next(feed)``, then forward (bf16 autocast on GPU), backward, AdamW update.

Timing. On CPU, host clocks: data-wait is the time blocked in ``next``, the step is wait + compute. On a
GPU, CUDA events on the current stream, with no sync inside the loop (a device-wide sync would also wait
for DALI's prefetch of later batches on its own stream and keep the host from running ahead): an event
after each step's update (``end``) and one after ``next`` returned (``data``). The step is the stream time
``end[i-1] -> end[i]``; data-wait is ``end[i-1] -> data[i]``: how long the stream sat between finishing
the previous step and having this batch (0 when the loader was ahead, the gap when the host was blocked
in ``next``, plus any copy or kernel the loader queued on the stream). The figures are read once, after
the last step, with one sync of that event.

    python -P benchmarks/bench_step.py --data ../shared/data/imagenet-samples --model vit_small_patch16_224 \\
        [--size 224] [--batch-size 256] [--steps 30] [--loader curriculum|plain] [--json PATH]
    # CPU smoke run: --model vit_tiny_patch16_224 --size 64 --batch-size 8 --steps 5
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Callable, Iterator

from vitdata.bench import record

from .common import Parallelism, RowSkipped, Settings, default_device, loader_importable, prepared_data, quiet_dali
from .feeds import row_vitdata

DEFINITION = ("data_wait_fraction = sum over timed steps of data-wait / sum of step times; GPU: CUDA events on the "
              "current stream (data-wait: previous step's end -> batch ready on the stream), CPU: host time "
              "blocked in next(loader)")


def _summary(waits: list[float], totals: list[float], clock: str) -> dict:
    return {"wait_s": waits, "step_s": totals, "wait_s_median": statistics.median(waits),
            "step_s_median": statistics.median(totals), "data_wait_fraction": sum(waits) / sum(totals),
            "clock": clock}


def time_steps(it: Iterator, step_fn: Callable, *, warmup: int, steps: int, cuda: bool) -> dict:
    """Per step: data-wait and whole-step seconds (see the module docstring), their medians and the
    data-wait fraction sum(wait) / sum(step)."""
    for _ in range(warmup):
        step_fn(*next(it))
    if not cuda:
        waits, totals = [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            step_fn(*batch)
            t2 = time.perf_counter()
            waits.append(t1 - t0)
            totals.append(t2 - t0)
        return _summary(waits, totals, "host perf_counter")
    import torch

    def event():
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    ends, ready = [event()], []
    for _ in range(steps):
        batch = next(it)
        ready.append(event())
        step_fn(*batch)
        ends.append(event())
    ends[-1].synchronize()   # the one sync: the figures are read here
    waits = [ends[i].elapsed_time(ready[i]) / 1e3 for i in range(steps)]
    totals = [ends[i].elapsed_time(ends[i + 1]) / 1e3 for i in range(steps)]
    return _summary(waits, totals, "CUDA events, current stream")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    st = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    st.add_argument("--data", default=None, help="data for the vitdata feed (without it only the synthetic runs)")
    st.add_argument("--model", default="vit_small_patch16_224",
                    help="timm model (vit_tiny/small/base_patch16_224), pretrained=False")
    st.add_argument("--size", type=int, default=224)
    st.add_argument("--batch-size", type=int, default=256)
    st.add_argument("--steps", type=int, default=30, help="timed steps per feed")
    st.add_argument("--warmup", type=int, default=5)
    st.add_argument("--num-classes", type=int, default=1000)
    st.add_argument("--loader", choices=("plain", "curriculum"), default="curriculum",
                    help="vitdata configuration: row 1 (curriculum) or row 2 (plain) of 'bench loader'")
    st.add_argument("--workers", type=int, default=None, help="unused by the vitdata feed; recorded")
    st.add_argument("--threads", type=int, default=None, help="DALI CPU threads (default: see bench loader)")
    st.add_argument("--source-workers", type=int, default=None, help="DALI source processes (default: see bench loader)")
    st.add_argument("--patch-size", type=int, default=16)
    st.add_argument("--device", default=None)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--json", help="record file or directory (default ./benchmarks/results/<device>/<date>-step.json)")
    return st


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    a = build_parser(prog).parse_args(argv)
    with quiet_dali():
        return _run(a)


def _run(a: argparse.Namespace) -> int:
    import timm
    import torch

    device = a.device or default_device()
    gpu = device.startswith("cuda")
    par = Parallelism.resolve(device, a.threads, a.source_workers, a.workers)
    torch.manual_seed(a.seed)
    model = timm.create_model(a.model, pretrained=False, num_classes=a.num_classes, img_size=a.size).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    crit = torch.nn.CrossEntropyLoss()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else contextlib.nullcontext()

    def step_fn(images, labels):
        with autocast:
            loss = crit(model(images), labels % a.num_classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    feeds, skipped = {}, []
    print(f"vitdata bench step: {a.model} at {a.size}px, batch {a.batch_size}, "
          f"{'bf16 autocast' if gpu else 'float32'} on {device}; {a.warmup} warm-up + {a.steps} timed steps per feed")
    g = torch.Generator().manual_seed(a.seed)
    syn_x = torch.randn(a.batch_size, 3, a.size, a.size, generator=g).to(device)
    syn_y = torch.randint(0, a.num_classes, (a.batch_size,), generator=g).to(device)

    def synthetic():
        while True:
            yield syn_x, syn_y

    feeds["synthetic"] = time_steps(synthetic(), step_fn, warmup=a.warmup, steps=a.steps, cuda=gpu)
    settings = {"model": a.model, "size": a.size, "batch_size": a.batch_size, "device": device,
                "precision": "bf16 autocast" if gpu else "float32", "optimizer": "AdamW", "warmup_steps": a.warmup,
                "steps": a.steps, "workers": par.workers, "threads": par.threads,
                "source_workers": par.source_workers, "loader": a.loader, "data": a.data}
    why = "no --data given" if not a.data else loader_importable()
    if why:
        skipped.append({"feed": "vitdata", "reason": why})
    else:
        needed = (a.warmup + a.steps + 2) * a.batch_size
        with prepared_data(a.data, needed) as (root, idx, cycle):
            s = Settings(data=a.data, root=root, kind=idx.kind, sources=list(idx.sources), num_samples=len(idx),
                         size=a.size, batch_size=a.batch_size, dtype="float32", device=device, workers=par.workers,
                         threads=par.threads, source_workers=par.source_workers, warmup=a.warmup, windows=1,
                         steps=a.steps, seed=a.seed, cycle=cycle, patch_size=a.patch_size)
            settings["cycled"] = cycle
            try:
                it, close, details = row_vitdata(s, a.loader == "curriculum")
                details.pop("_delivered_ids", None)
                details.pop("_loader", None)
                try:
                    feeds["vitdata"] = {**time_steps(it, step_fn, warmup=a.warmup, steps=a.steps, cuda=gpu),
                                        "details": details}
                finally:
                    close()
            except RowSkipped as e:
                skipped.append({"feed": "vitdata", "reason": str(e)})
    print(f"{'feed':<10} {'step ms':>9} {'data-wait ms':>13} {'data-wait %':>12}")
    for name, f in feeds.items():
        print(f"{name:<10} {1000 * f['step_s_median']:>9.1f} {1000 * f['wait_s_median']:>13.2f} "
              f"{100 * f['data_wait_fraction']:>11.2f}%")
    for sk in skipped:
        print(f"{sk['feed']:<10} skipped: {sk['reason']}")
    if "vitdata" in feeds:
        d = feeds["vitdata"]["details"]
        slow = feeds["vitdata"]["step_s_median"] / feeds["synthetic"]["step_s_median"]
        print(f"vitdata-fed step / synthetic-fed step: {slow:.3f}x (DALI on {d.get('runs_on', '-')})")
    rec = {"settings": settings, "feeds": feeds, "skipped": skipped, "definition": DEFINITION}
    path = record.write_record("step", rec, a.json)
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
