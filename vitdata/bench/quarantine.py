"""What does the quarantine cost on DALI: per step when nothing fails, per step that fails in the decoder,
and per epoch when 0.5 % or 2 % of the files are bad (refused from their headers, or by the decoder)?

The DALI backend's only added work on a step that does not fail is one ``pipe.checkpoint()`` every
``LoaderConfig.checkpoint_every`` steps (what a state taken right after a redo replays from; see
``vitdata/loader/backends/dali.py``), plus a membership test of an empty quarantine per sample. The baseline
is the same loader, same process, with that periodic checkpoint switched off (``checkpoint_every`` past the epoch), which is the hot path before
quarantine; the two run interleaved, ``--repeats`` epochs each, and the median epochs are compared
(target: <= 1 % slower). Then one epoch with one decoder-failing file (a PNG whose zlib stream is corrupt
under valid CRCs) is timed against the same epoch of a clean copy of the data, from a fresh loader each:
the difference is the cost of one failing step (probe, quarantine, redo in a copy of the graph), for 0
and 2 source workers with the RandAugment graph and for 0 workers without it. Last, the epoch at a bad-file
rate: ``--rate-samples`` JPEGs of which ``--rates`` (share of the files) are replaced by bad files, at random
places after the first step, against the same epoch with no bad file: a fresh loader and an empty store of
known-bad files each (the first step builds the pipeline and is not timed); one row per kind of
``--bad-kinds`` and rate: ``jpeg_header`` (JPEGs with a fatal error libjpeg reads from the headers, refused
by the JPEG walk before any decoder), ``png_data`` (PNGs whose zlib stream is corrupt under valid CRCs,
refused by the PNG data check before any decoder) and ``png_decoder`` (the same PNGs with that check off,
``LoaderConfig(check_png_data=False)``: the decoder's failure path, probe, quarantine, redo, which any file
no check foresees takes); targets <= 1.2x at 0.5 % and <= 1.5x at 2 %. The one-failure epochs take the
decoder's path too. Writes a JSON record.

    vitdata bench quarantine [--samples 512] [--size 96] [--batch-size 16] [--repeats 9] [--trials 3]
                             [--rates 0.005,0.02] [--rate-samples 2000] [--rate-batch-size 32]
                             [--bad-kinds jpeg_header,png_data,png_decoder]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

TARGET_OVERHEAD = 0.01
TARGET_RATE = {0.005: 1.2, 0.02: 1.5}   # epoch with that share of bad files / clean epoch
# The rate epochs' bad files, each written in place of a JPEG of the ImageFolder (vitdata.bench.badcorpus):
# kind -> (what it is, whether the decoder sees it)
BAD_KINDS = {"jpeg_header": ("JPEGs whose scan names a component the frame lacks (refused by the JPEG walk, "
                             "before any decoder)", False),
             "png_data": ("PNGs with a corrupt deflate stream under a valid CRC (refused by the PNG data check, "
                          "before any decoder)", False),
             "png_decoder": ("the same PNGs with the PNG data check off (LoaderConfig(check_png_data=False)): "
                             "refused by the decoder, then probe, quarantine and redo", True)}


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--size", type=int, default=96, help="stored image side (px)")
    p.add_argument("--image-size", type=int, default=64, help="output side (px)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--trials", type=int, default=3, help="epochs per (clean, one failure) pair and graph")
    p.add_argument("--rates", default="0.005,0.02", help="shares of bad files in the rate epochs (comma-separated)")
    p.add_argument("--rate-samples", type=int, default=2000, help="JPEGs of the bad-file-rate epochs")
    p.add_argument("--rate-batch-size", type=int, default=32)
    p.add_argument("--bad-kinds", default=",".join(BAD_KINDS),
                   help=f"bad files of the rate epochs, comma-separated: {', '.join(BAD_KINDS)}")
    p.add_argument("--json", help="record file or directory (default "
                                   "./benchmarks/results/<device>/<date>-quarantine.json)")
    a = p.parse_args(argv)
    _bad_kinds(a.bad_kinds)   # refused before anything is timed

    from vitdata.bench import record
    from vitdata.data import selfid

    from .common import scratch_dir

    with scratch_dir("vitdata-bench-quarantine-") as tmp:
        clean = os.path.join(tmp, "clean")
        selfid.write_imagefolder(clean, a.samples, num_classes=4, size=a.size)
        bad = os.path.join(tmp, "bad")
        shutil.copytree(clean, bad)
        quiet = _no_failure_overhead(a, clean)
        victim = _break_one_file(a, bad, quiet["steps"])
        failure = _one_failure_costs(a, clean, bad, quiet["steps"], victim)
        rates = _rate_epochs(a, tmp)
        path = record.write_record("quarantine", _record(a, quiet, failure, rates), a.json)
        print(f"record: {path}")
    return 0


def _config(a, root: str, workers: int = 0, randaug: bool = True, **kw):
    from vitdata.loader import LoaderConfig
    from vitdata.loader.config import AugmentConfig

    return LoaderConfig(data=root, batch_size=a.batch_size, image_size=a.image_size, backend="dali",
                        num_workers=workers, num_threads=a.threads, seed=0, on_error="skip",
                        augment=AugmentConfig(randaug=randaug), **kw)


def _no_failure_overhead(a, clean: str) -> dict:
    """Epochs of the loader with its periodic checkpoint vs the same loader without it (``checkpoint_every``
    past the epoch), interleaved; then one ``checkpoint()`` timed alone on the running pipeline."""
    from vitdata.loader import create_loader

    every = _config(a, clean).checkpoint_every
    loaders = {"quarantine": create_loader(_config(a, clean)),
               "baseline": create_loader(_config(a, clean, checkpoint_every=10 ** 9))}
    times = {k: [] for k in loaders}
    steps = len(loaders["baseline"])
    for epoch in range(a.repeats + 1):
        for name, ld in sorted(loaders.items(), reverse=bool(epoch % 2)):   # alternate which goes first
            ld.set_epoch(epoch)
            t0 = time.perf_counter()
            n = sum(1 for _ in ld)
            dt = time.perf_counter() - t0
            assert n == steps
            if epoch:   # epoch 0 warms up
                times[name].append(dt)
    # The added work itself, timed alone on the running pipeline: one checkpoint per checkpoint_every steps.
    ld = loaders["quarantine"]
    ld.set_epoch(a.repeats + 1)
    it = iter(ld)
    next(it)
    pipe = ld._backend.pipe
    t0 = time.perf_counter()
    for _ in range(50):
        pipe.checkpoint()
    ck_s = (time.perf_counter() - t0) / 50
    for _ in it:
        pass
    for ld in loaders.values():
        ld.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = med["quarantine"] / med["baseline"] - 1.0
    bound = ck_s / every / (med["baseline"] / steps)
    print(f"no failure: epoch of {steps} steps x {a.batch_size} ({a.size}->{a.image_size} px, RandAugment): "
          f"median {med['quarantine'] * 1e3:.1f} ms with quarantine, {med['baseline'] * 1e3:.1f} ms without its "
          f"periodic checkpoint ({a.repeats} epochs each, interleaved): {overhead * 100:+.2f} % "
          f"(target <= {TARGET_OVERHEAD * 100:.0f} %); the added work alone: one checkpoint() of "
          f"{ck_s * 1e3:.2f} ms per {every} steps of {med['baseline'] / steps * 1e3:.1f} ms = {bound * 100:.2f} %")
    return {"every": every, "steps": steps, "times": times, "median": med, "overhead": overhead,
            "checkpoint_s": ck_s, "bound": bound}


def _break_one_file(a, bad: str, steps: int) -> int:
    """Overwrite one file of ``bad`` mid-epoch with a PNG the decoder refuses; returns its sample id."""
    import numpy as np
    from PIL import Image

    from vitdata.bench import badcorpus
    from vitdata.data import selfid
    from vitdata.loader import create_loader

    probe = create_loader(_config(a, bad, check_png_data=False))
    order = probe.sampler.epoch_ids(0).reshape(-1).tolist()
    # mid-epoch, 3 steps after a checkpoint (a replay runs 0 .. checkpoint_every - 1 steps again)
    victim = order[(steps // 2 + 3) * a.batch_size + a.batch_size // 2]
    path, label = probe.index.path(victim), int(probe.index.label[victim])
    probe.close()
    with Image.open(path) as im:
        pid = selfid.decode(np.asarray(im.convert("RGB")))[0]
    with open(path, "wb") as f:
        f.write(badcorpus.make("png_bad_zlib", pid, label, a.size))
    return victim


def _one_failure_costs(a, clean: str, bad: str, steps: int, victim: int) -> dict:
    """An epoch with one decoder-failing file vs the same epoch of the clean copy, from a fresh loader
    each, for 0 and 2 source workers with the RandAugment graph and 0 workers without it."""
    from vitdata.loader import create_loader

    failure = {}
    for workers, randaug in ((0, True), (2, True), (0, False)):
        runs = {"clean": [], "one_failure": []}
        for _ in range(a.trials):
            for name, root in (("clean", clean), ("one_failure", bad)):
                ld = create_loader(_config(a, root, workers, randaug, check_png_data=False))
                it = iter(ld)
                next(it)   # the pipeline (and its workers) is built: not part of the comparison
                t0 = time.perf_counter()
                n = 1 + sum(1 for _ in it)
                runs[name].append(time.perf_counter() - t0)
                assert n == steps
                if name == "one_failure":
                    assert [r["id"] for r in ld.skipped(0)] == [victim], ld.skipped(0)
                ld.close()
        m = {k: statistics.median(v) for k, v in runs.items()}
        key = f"workers_{workers}" + ("" if randaug else "_no_randaug")
        failure[key] = {"clean_epoch_s": m["clean"], "one_failure_epoch_s": m["one_failure"],
                        "ms_per_failing_step": (m["one_failure"] - m["clean"]) * 1e3, "times_s": runs}
        print(f"one failing step, {workers} source workers, {'RandAugment' if randaug else 'no RandAugment'} "
              f"graph: {(m['one_failure'] - m['clean']) * 1e3:.0f} ms "
              f"(epoch {m['one_failure'] * 1e3:.0f} ms vs {m['clean'] * 1e3:.0f} ms clean; median of "
              f"{len(runs['clean'])})")
    return failure


def _bad_kinds(option: str) -> list[str]:
    kinds = [k.strip() for k in option.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(BAD_KINDS))
    if unknown or not kinds:
        raise SystemExit(f"--bad-kinds: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(BAD_KINDS)})")
    return kinds


def _write_rate_roots(a, tmp: str, kinds: list[str], rates: list[float]) -> tuple[dict, dict, int]:
    """The clean ImageFolder of ``--rate-samples`` JPEGs and, per (kind, rate), a copy with that share of its
    files (the same ones for every kind, at random places after the first step) replaced by bad files of
    that kind. Returns ({(kind, rate) or "clean": root}, {rate: bad files}, steps)."""
    import numpy as np

    from vitdata.bench import badcorpus
    from vitdata.data import selfid
    from vitdata.loader import create_loader

    b = a.rate_batch_size
    roots = {"clean": os.path.join(tmp, "rate-clean")}
    selfid.write_imagefolder(roots["clean"], a.rate_samples, num_classes=10, size=a.size)
    probe = create_loader(_config(argparse.Namespace(**dict(vars(a), batch_size=b)), roots["clean"]))
    order, index = probe.sampler.epoch_ids(0).reshape(-1), probe.index
    probe.close()
    rng = np.random.default_rng(0)
    bad_files = {rate: max(1, round(rate * a.rate_samples)) for rate in rates}
    chosen = {rate: rng.choice(order[b:], size=bad_files[rate], replace=False) for rate in rates}
    for kind in kinds:
        for rate in rates:
            roots[kind, rate] = os.path.join(tmp, f"rate-{kind}-{rate}")
            shutil.copytree(roots["clean"], roots[kind, rate])
            for sid in chosen[rate]:
                rel = os.path.relpath(index.path(int(sid)), roots["clean"])
                with open(os.path.join(roots[kind, rate], rel), "r+b") as f:
                    data = f.read()
                    f.seek(0)
                    f.truncate()
                    f.write(badcorpus.jpeg_bad_component(data) if kind == "jpeg_header" else
                            badcorpus.make("png_bad_zlib", int(sid), int(index.label[sid]), a.size))
    return roots, bad_files, len(order) // b


def _rate_epochs(a, tmp: str) -> dict:
    """Epoch 0 (after its first step) of ``--rate-samples`` JPEGs with each share of ``--rates`` replaced by
    bad files of each of ``--bad-kinds`` vs the same epoch of the clean files; median of ``--trials``, a
    fresh loader and store each. One row per (kind, rate)."""
    from vitdata.loader import create_loader

    rates = [float(r) for r in a.rates.split(",") if r.strip()]
    kinds = _bad_kinds(a.bad_kinds)
    b = a.rate_batch_size
    a_rate = argparse.Namespace(**dict(vars(a), batch_size=b))
    roots, bad_files, steps = _write_rate_roots(a, tmp, kinds, rates)
    times = {r: [] for r in roots}
    for trial in range(a.trials):
        for j, (key, root) in enumerate(roots.items()):
            os.environ["VITDATA_CACHE"] = os.path.join(tmp, f"cache-rate-{trial}-{j}")   # nothing known bad
            ld = create_loader(_config(a_rate, root, check_png_data=key == "clean" or key[0] != "png_decoder"))
            it = iter(ld)
            next(it)   # builds the pipeline (and may not fail: no bad file sits in the first step)
            t0 = time.perf_counter()
            n = 1 + sum(1 for _ in it)
            times[key].append(time.perf_counter() - t0)
            skipped, quarantined = len(ld.skipped(0)), len(ld.quarantine)
            ld.close()
            want = 0 if key == "clean" else bad_files[key[1]]
            reach_decoder = key != "clean" and BAD_KINDS[key[0]][1]
            assert n == steps and skipped == want and quarantined == (want if reach_decoder else 0), \
                (key, n, skipped, quarantined)
    clean = statistics.median(times["clean"])
    rows = {kind: {} for kind in kinds}
    for kind in kinds:
        for rate in rates:
            m = statistics.median(times[kind, rate])
            rows[kind][str(rate)] = {"epoch_s": m, "clean_epoch_s": clean, "ratio": m / clean,
                                     "times_s": times[kind, rate], "bad_files": bad_files[rate],
                                     "target": TARGET_RATE.get(rate)}
            print(f"{kind} at {rate * 100:.1f} %: epoch {m:.2f} s vs {clean:.2f} s clean = {m / clean:.2f}x "
                  f"(target <= {TARGET_RATE.get(rate, float('nan'))}x; {bad_files[rate]} of {a.rate_samples} "
                  f"files {a.size} -> {a.image_size} px, batch {b}, RandAugment, {a.threads} threads, median of "
                  f"{a.trials})")
    return {"samples": a.rate_samples, "batch_size": b, "clean_times_s": times["clean"],
            "kinds": {k: BAD_KINDS[k][0] for k in kinds}, "rates": rows}


def _record(a, quiet: dict, failure: dict, rates: dict) -> dict:
    overhead, bound = quiet["overhead"], quiet["bound"]
    return {
        "settings": {"samples": a.samples, "size": a.size, "image_size": a.image_size, "batch_size": a.batch_size,
                     "threads": a.threads, "repeats": a.repeats, "trials": a.trials,
                     "checkpoint_every": quiet["every"], "rates": a.rates, "rate_samples": a.rate_samples,
                     "rate_batch_size": a.rate_batch_size, "bad_kinds": a.bad_kinds},
        "no_failure": {"median_epoch_s": quiet["median"], "times_s": quiet["times"], "overhead": overhead,
                       "steps": quiet["steps"], "checkpoint_s": quiet["checkpoint_s"], "overhead_bound": bound},
        "one_failure": failure, "bad_file_rates": rates,
        "targets": {"overhead": TARGET_OVERHEAD, "rate_ratio": {str(k): v for k, v in TARGET_RATE.items()}},
        "headline": [{"measured": "step cost of the quarantine, no failure (DALI CPU)",
                      "figure": f"{overhead * 100:+.2f} % (added work alone: {bound * 100:.2f} %)",
                      "compared": f"vs the same loader without its periodic checkpoint; target <= "
                                  f"{TARGET_OVERHEAD * 100:.0f} %"}]
                    + [{"measured": f"cost of one step that fails in the decoder, {w.replace('_', ' ')}",
                        "figure": f"{r['ms_per_failing_step']:.0f} ms",
                        "compared": "probe + quarantine + redo of the step in a copy of the graph"}
                       for w, r in failure.items()]
                    + [{"measured": f"epoch with {float(k) * 100:.1f} % bad files, {kind} ({r['bad_files']} of "
                                    f"{rates['samples']}, batch {rates['batch_size']})",
                        "figure": f"{r['ratio']:.2f}x", "compared": f"vs the clean epoch; target <= {r['target']}x"}
                       for kind, by_rate in rates["rates"].items() for k, r in by_rate.items()]}


if __name__ == "__main__":
    raise SystemExit(main())
