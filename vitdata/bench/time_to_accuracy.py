"""How long does each recipe take to reach the baseline's accuracy, same model, optimiser and epoch budget?

Every run is one ``vitdata train --recipe R`` in a child process, with the same model (``--patch-size``
for every run), optimiser, peak LR, batch size, epochs and data; the recipe (``baseline``,
``efficienttrain``, ``1gpu24h``, ``pss``, ``data-centric``, ``drloc``, ``vitdata``) only adds its own
switches (its warm-up among them, unless ``--warmup-epochs`` sets one for all). ``--recipes`` lists the
runs, each ``RECIPE`` or ``RECIPE:FLAGS`` with more options for that run alone, so ablations and seeds
are runs of one record: ``1gpu24h:--no-locality`` (the size curriculum alone), ``baseline:--locality``
(the locality alone), ``baseline:--seed 1``. The baseline's seeds run first; their mean final top-1 is
every run's target and their spread is recorded. Runs that ``OUT/runs.partial.json`` already holds with
the same settings are kept, not rerun (``--rerun`` redoes them), so a record can grow over several
sittings. Per run the record holds:

- ``wall_s``: wall time of the whole child process; ``cpu_s`` (user + sys of the child and its workers):
  the machine may be shared, so both are kept, with the load average before and after the run;
- ``train_s`` (the run's own clock, evaluations included), ``images_per_s`` (training images / train_s);
- ``token_blocks`` and ``flops``: estimated training compute from the run's schedule: per step, batch x
  tokens (the step's image or low-pass side, PSS keep ratio) x blocks; FLOPs = 3 x forward, forward per
  token and block ``24 D^2 + 4 T D`` (projections, MLP, attention on T tokens);
- ``evals``: top-1 / top-5 / loss on the validation split after every epoch, with the run's clock;
  ``test_top1`` on ``--test`` at the end (not timed);
- ``reached``: the first epoch whose top-1 is within ``--tolerance`` (0.3 pt) of the baseline's (mean)
  final top-1, its time, and ``time_ratio`` = that time / the baseline's (mean) run time (same clock, the
  train_s); ``final_top1``.

It prints a table (time ratio vs the baseline), writes one record (:mod:`vitdata.bench.record`) and a plot
of top-1 against the run's time, one line per recipe (skipped with a message without matplotlib).

Data: ``--train`` and ``--val``. Without ``--val``, ``--train`` (WebDataset shards) is split by
``--split-seed`` into ``--val-size`` validation samples and the rest for training; the index cannot
select ids, so the split is written once as shards into the vitdata cache (``$VITDATA_CACHE/splits/``,
about the size of the source) and reused. ``--train-size N`` keeps the first N training samples of the
split (calibration, CI).

Calibration (CIFAR-10 split 45,000 / 5,000 by seed 0; model ``vit_tiny_patch16_224`` with 4
blocks, width 192, patch 4, 32 px, 65 tokens; batch 128, AdamW, 1 warm-up epoch, cosine, the train
defaults otherwise): at lr 2e-3 the baseline's training loss stayed at 2.05-2.15 through epoch 2 and it
had 30.8 % after two epochs; at 1e-3 (the default here since) 33.3 %. One 45,000-image baseline epoch takes
about 235 s on 2 quiet cores with ``OMP_NUM_THREADS=2`` (evaluation of 5,000 included).

The committed record (``benchmarks/results/cpu/2026-11-30-time-to-accuracy.json``), 8 epochs, 2 quiet
cores, about 75 minutes in all; the README's "Time to accuracy" states its figures::

    OMP_NUM_THREADS=2 vitdata bench time-to-accuracy --train ../shared/data/cifar10 --epochs 8 --lr 1e-3 \
        --recipes baseline,efficienttrain,1gpu24h,vitdata --out runs/t2a --json benchmarks/results/cpu/
    # all seven: --recipes baseline,efficienttrain,1gpu24h,pss,data-centric,drloc,vitdata (about 2.5 hours)

    vitdata bench time-to-accuracy --train DIR [--val DIR] [--test DIR] [--recipes a,b] [--epochs 8]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time


from vitdata.bench import record
from vitdata.io import atomic_write
from vitdata.train.config import RECIPES
from vitdata.train.log import read_log

from .splits import split_shards

TOLERANCE_PT = 0.3


# --------------------------------------------------------------------------------------------------
# Compute of a run, from its schedule


def estimate_compute(argv: list[str], num_train: int, steps_per_epoch: list[int] | None = None) -> dict:
    """token_blocks and FLOPs of the training steps of ``vitdata train argv`` on ``num_train`` samples.

    ``steps_per_epoch``: the steps each epoch really ran (a pruning oracle shortens epochs); default the
    full ``num_train // batch``. A shortened epoch counts its schedule's mean step that many times."""
    from vitdata.train.models import num_kept_tokens
    from vitdata.train.loop import build_schedule
    from vitdata.train.config import parse_config
    cfg = parse_config(argv)
    spe = num_train // cfg.batch_size
    sched = build_schedule(cfg, spe)
    width, depth = _width_depth(cfg)
    ran = list(steps_per_epoch) if steps_per_epoch and len(steps_per_epoch) == cfg.epochs else [spe] * cfg.epochs
    token_blocks = flops = 0.0
    for epoch in range(cfg.epochs):
        tb = fl = 0.0
        for step in range(spe):
            k = sched(epoch, step)
            side = k.lowpass_size or k.image_size
            n = (side // cfg.patch_size) ** 2 + 1
            if cfg.pss and k.keep_ratio < 1.0:
                n = num_kept_tokens(n, k.keep_ratio)
            tb += cfg.batch_size * n * depth
            fl += 3.0 * cfg.batch_size * depth * (24.0 * width * width * n + 4.0 * n * n * width)
        share = ran[epoch] / spe
        token_blocks += tb * share
        flops += fl * share
    return {"token_blocks": token_blocks, "flops": flops, "steps": int(sum(ran)), "width": width, "depth": depth}


def steps_per_epoch(evals: list[dict]) -> list[int] | None:
    """Steps of each epoch from the global step count logged with every evaluation (None if any is missing)."""
    if not evals or any(e.get("step") is None for e in evals):
        return None
    out, last = [], 0
    for e in evals:
        out.append(int(e["step"]) - last)
        last = int(e["step"])
    return out


def _width_depth(cfg) -> tuple[int, int]:
    """(token width, blocks) of ``cfg``'s model, built on the meta device (no memory, no init)."""
    import timm
    import torch
    with torch.device("meta"):
        m = timm.create_model(cfg.model, pretrained=False, num_classes=10, patch_size=cfg.patch_size,
                              img_size=cfg.image_size,
                              **{k: getattr(cfg, k) for k in ("depth", "embed_dim", "num_heads") if getattr(cfg, k)})
    return int(m.embed_dim), len(m.blocks)


# --------------------------------------------------------------------------------------------------
# One recipe


def parse_runs(text: str) -> list[dict]:
    """``--recipes`` -> the runs, baseline runs first: comma-separated ``RECIPE`` or ``RECIPE:FLAGS``, where
    FLAGS are more ``vitdata train`` options for that run alone (``1gpu24h:--no-locality``,
    ``baseline:--seed 1``). A run's name is its spec; ``baseline`` runs that differ only in ``--seed`` form
    the baseline, whose mean final top-1 is every run's target."""
    runs = []
    for spec in (s.strip() for s in text.split(",")):
        if spec:
            recipe, _, flags = spec.partition(":")
            runs.append({"name": " ".join([recipe.strip(), *flags.split()]), "recipe": recipe.strip(),
                         "flags": flags.split()})
    return sorted(runs, key=lambda r: not is_baseline(r))


def is_baseline(run: dict) -> bool:
    """Whether ``run`` is one of the baseline's seeds: recipe ``baseline`` with no flag but ``--seed N``."""
    flags = run.get("flags") or []
    return run["recipe"] == "baseline" and (not flags or (len(flags) == 2 and flags[0] == "--seed"))


def clear_run_dir(run_dir: str, verbose: bool = True) -> None:
    """Remove the folder of a run that is about to start afresh: one left by an interrupted attempt (a run
    that finished is kept in ``runs.partial.json`` and never started again), whose log would otherwise hold
    the interrupted attempt's evaluations before the new run's."""
    if os.path.isdir(run_dir):
        if verbose:
            print(f"vitdata bench time-to-accuracy: removing {run_dir}, left by an interrupted attempt")
        shutil.rmtree(run_dir)


def run_recipe(recipe: str, common: list[str], run_dir: str, num_train: int, verbose: bool = True,
               flags: list[str] = (), name: str | None = None) -> dict:
    """Run ``vitdata train --recipe recipe common... flags...`` in a child process; its times, compute and
    evals (``flags`` come last, so they win over ``common``)."""
    argv = ["--recipe", recipe, *common, *flags, "--out", run_dir, "--no-progress", "--no-report"]
    clear_run_dir(run_dir, verbose)
    env = dict(os.environ)
    load0 = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vitdata", "train", *argv], env=env,
                          stdout=None if verbose else subprocess.DEVNULL, stderr=None if verbose else subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rec = {"name": name or recipe, "recipe": recipe, "flags": list(flags), "argv": argv,
           "returncode": proc.returncode, "wall_s": wall,
           "cpu_user_s": ru1.ru_utime - ru0.ru_utime, "cpu_sys_s": ru1.ru_stime - ru0.ru_stime,
           "loadavg_before": list(load0), "loadavg_after": list(os.getloadavg()), "out": run_dir}
    rec["cpu_s"] = rec["cpu_user_s"] + rec["cpu_sys_s"]
    if proc.returncode != 0:
        rec["error"] = (proc.stderr or "")[-2000:] if not verbose else "see the output above"
        return rec
    with open(os.path.join(run_dir, "result.json")) as f:
        result = json.load(f)
    evals = read_log(os.path.join(run_dir, "log.jsonl")).get("eval", [])
    rec["evals"] = [{"epoch": r["epoch"], "time_s": r["time"], "top1": r["top1"], "top5": r["top5"],
                     "loss": r["loss"], "step": r.get("step")} for r in evals]
    rec["train_s"] = result["wall_s"]
    rec["steps"] = result["step"]
    batch = next((int(a) for k, a in zip(argv, argv[1:]) if k == "--batch-size"), 128)
    rec["images"] = rec["steps"] * batch
    rec["images_per_s"] = rec["images"] / result["wall_s"] if result["wall_s"] > 0 else None
    rec["final_top1"] = rec["evals"][-1]["top1"] if rec["evals"] else None
    rec["test_top1"] = result.get("test_top1")
    add_switches(rec)
    rec.update(estimate_compute(argv, num_train, steps_per_epoch(rec["evals"])))
    rec["steps"] = result["step"]   # the run's own count (the estimate's is derived from the evaluations)
    return rec


# The method switches of `vitdata train` a recipe may set; the record names those that differ from the defaults.
SWITCHES = ("curriculum", "curriculum_magnitude", "size_curriculum", "size_epoch_step", "locality", "pss", "pss_mode",
            "global_pool", "patch_erasing", "oracle", "oracle_mixing", "drloc", "warmup_epochs", "mixup", "cutmix",
            "randaug_magnitude")


def add_switches(rec: dict) -> None:
    """Give ``rec`` its run's resolved ``config`` (the run folder's config.json, when it is still there and
    ``rec`` has none) and ``switches``: the method switches that differ from ``vitdata train``'s defaults,
    e.g. "locality=True, oracle=prune-easy", so a record says what each run was even after a recipe's
    preset changes."""
    from vitdata.train.config import TrainConfig
    path = os.path.join(rec.get("out") or "", "config.json")
    if "config" not in rec and os.path.isfile(path):
        with open(path) as f:
            rec["config"] = json.load(f)
    cfg = rec.get("config")
    if cfg is None:
        return
    defaults = TrainConfig()
    rec["switches"] = ", ".join(f"{k}={cfg[k]}" for k in SWITCHES if k in cfg and cfg[k] != getattr(defaults, k))


def reached(rec: dict, target: float, tolerance: float) -> dict:
    """First eval of ``rec`` within ``tolerance`` points of ``target``: epoch, time, or None."""
    for e in rec.get("evals", []):
        if e["top1"] >= target - tolerance:
            return {"epoch": e["epoch"], "time_s": e["time_s"]}
    return {"epoch": None, "time_s": None}


# --------------------------------------------------------------------------------------------------
# Comparisons, recomputation, headline, table and plot


def baseline_of(runs: list[dict]) -> dict | None:
    """The baseline over its seeds (:func:`is_baseline` runs that finished): mean final top-1 (the target),
    its spread (max - min), and the mean train, wall and CPU seconds and FLOPs; None without one."""
    seeds = [r for r in map(_named, runs) if is_baseline(r) and not r["returncode"]]
    if not seeds:
        return None

    def mean(key):   # None where a run lacks the figure (a record written before it was kept)
        values = [r.get(key) for r in seeds]
        return None if None in values else sum(values) / len(values)
    tops = [r["final_top1"] for r in seeds]
    return {"runs": [r["name"] for r in seeds], "final_top1": mean("final_top1"), "spread": max(tops) - min(tops),
            "train_s": mean("train_s"), "wall_s": mean("wall_s"), "cpu_s": mean("cpu_s"), "flops": mean("flops")}


def _named(r: dict) -> dict:
    """A run of a record written before runs had names and flags (one run per recipe)."""
    return r if "name" in r else dict(r, name=r["recipe"], flags=[])


def compare(runs: list[dict], tolerance: float) -> None:
    """Add to every finished run what follows from the baseline's (:func:`baseline_of`): ``reached``
    (epoch, time and time ratio at which it first came within ``tolerance`` of the baseline's mean final
    top-1) and its wall, CPU and FLOP ratios to the baseline's means."""
    base = baseline_of(runs)
    for r in runs:
        if base is None or r["returncode"]:
            continue
        rc = reached(r, base["final_top1"], tolerance)
        rc["time_ratio"] = rc["time_s"] / base["train_s"] if rc["time_s"] is not None else None
        rc["target_top1"] = base["final_top1"]
        r["reached"] = rc
        r["wall_ratio"] = r["wall_s"] / base["wall_s"]
        r["cpu_ratio"] = r["cpu_s"] / base["cpu_s"] if base["cpu_s"] > 0 else None
        r["flops_ratio"] = r["flops"] / base["flops"] if base["flops"] else None


def recompute(path: str, why: str) -> dict:
    """Re-derive a record's derived figures from its measured ones with this code: each run's compute
    (from its argv and the steps its evaluations logged), its switches, the comparisons, the headline, and
    the plot (drawn beside the record, ``RECORD.png``). The measured
    fields (times, accuracies, steps) are not touched; ``settings.recomputed`` says when, at which commit
    and ``why``. Rewrites ``path``; returns the record."""
    rec = record.read_record(path)
    s = rec["settings"]
    for r in rec["runs"]:
        if r.get("returncode") == 0:
            r.update(estimate_compute(r["argv"], s["num_train"], steps_per_epoch(r["evals"])))
            add_switches(r)
    compare(rec["runs"], s.get("tolerance", TOLERANCE_PT))
    rec["headline"] = headline(rec["runs"], s["epochs"], s["num_train"])
    drawn = plot(rec["runs"], os.path.splitext(path)[0] + ".png")     # beside the record, named like it
    rec["plot"] = os.path.basename(drawn) if drawn else None
    s.setdefault("recomputed", []).append({"commit": record.git_commit(), "date": time.strftime("%Y-%m-%d"),
                                           "why": why})
    record.write_record("time-to-accuracy", rec, path)   # keeps its format, date and environment
    return rec


def headline(runs: list[dict], epochs: int, num_train: int) -> list[dict]:
    """The record's headline lines: the baseline's final top-1 (the target), then per recipe the fraction of
    the baseline's time at which it first reached that target (or its own final top-1 if it never did)."""
    base = baseline_of(runs)
    if base is None:
        return []
    seeds = f" ({len(base['runs'])} seeds, spread {base['spread']:.2f} pt)" if len(base["runs"]) > 1 else ""
    lines = [{"measured": f"baseline: val top-1 after {epochs} epochs of {num_train:,} images{seeds}",
              "figure": f"{base['final_top1']:.2f} % in {base['train_s']:.0f} s",
              "compared": "the target of every recipe (within 0.3 pt)"}]
    for r in map(_named, runs):
        rc = r.get("reached") or {}
        if r["returncode"] or is_baseline(r):
            continue
        fig = (f"{rc['time_ratio']:.2f}x the baseline's time (epoch {rc['epoch']})"
               if rc.get("time_ratio") is not None else f"did not reach it (final {r['final_top1']:.2f} %)")
        name = f"{r['name']} ({r['switches']})" if r.get("switches") else r["name"]
        lines.append({"measured": f"{name}: time to the baseline's final top-1 ({base['final_top1']:.1f} %)",
                      "figure": fig, "compared": f"baseline {base['train_s']:.0f} s, {epochs} epochs"})
    return lines


def table(runs: list[dict]) -> str:
    head = (f"{'run':<28} {'final top-1':>11} {'reached':>8} {'at epoch':>8} {'at s':>8} {'ratio':>6} "
            f"{'train s':>8} {'wall s':>8} {'cpu s':>8} {'img/s':>7} {'GFLOP':>9}")
    lines = [head, "-" * len(head)]
    for r in map(_named, runs):
        if r.get("returncode"):
            lines.append(f"{r['name']:<28} failed (exit {r['returncode']})")
            continue
        rc = r.get("reached", {})
        ratio, at = rc.get("time_ratio"), rc.get("time_s")
        yes = "yes" if rc.get("epoch") is not None else "no"
        at_s = "-" if at is None else f"{at:.0f}"
        ratio_s = "-" if ratio is None else f"{ratio:.2f}"
        lines.append(f"{r['name']:<28} {r['final_top1']:>11.2f} {yes:>8} {str(rc.get('epoch') or '-'):>8} "
                     f"{at_s:>8} {ratio_s:>6} {r['train_s']:>8.0f} {r['wall_s']:>8.0f} "
                     f"{r['cpu_s']:>8.0f} {r['images_per_s']:>7.0f} {r['flops'] / 1e9:>9.1f}")
    return "\n".join(lines)


def plot(runs: list[dict], path: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("time-to-accuracy: matplotlib is not importable; no plot", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in map(_named, runs):
        if r.get("evals"):
            ax.plot([e["time_s"] for e in r["evals"]], [e["top1"] for e in r["evals"]], marker="o",
                    label=f"{r['name']} ({r['switches']})" if r.get("switches") else r["name"])
    base = baseline_of(runs)
    if base:
        ax.axhline(base["final_top1"] - TOLERANCE_PT, color="grey", lw=0.8, ls="--", label="baseline final - 0.3")
    ax.set_xlabel("run time (s, evaluations included)")
    ax.set_ylabel("val top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# The benchmark


def partial_runs(runs: list[dict], kept: dict[str, dict]) -> list[dict]:
    """What ``runs.partial.json`` holds after each finished run: this sitting's runs so far, then every run
    an earlier sitting finished (``kept``) that this one has not reached or does not plan, so a sitting cut
    off before its kept runs come up loses none of them."""
    names = {_named(r)["name"] for r in runs}
    return runs + [r for name, r in kept.items() if name not in names]


def kept_runs(path: str, common: list[str]) -> dict[str, dict]:
    """Finished runs of an earlier sitting (``runs.partial.json``) made with the same ``common`` settings,
    by name."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        old = json.load(f)
    if old.get("common") != common:
        return {}
    return {_named(r)["name"]: r for r in old.get("runs", []) if r.get("returncode") == 0}


def parse_args(argv, prog):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", help="training split (WebDataset shards or ImageFolder); required unless --recompute")
    p.add_argument("--val", help="validation split; without it --train is split (--val-size, --split-seed)")
    p.add_argument("--test", help="test split, evaluated at the end of every run")
    p.add_argument("--val-size", type=int, default=5000, help="validation samples carved out of --train")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val split")
    p.add_argument("--train-size", type=int, default=0, help="keep the first N training samples of the split "
                   "(0 = all)")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated runs, each RECIPE or RECIPE:FLAGS "
                   "(more vitdata train options for that run: '1gpu24h:--no-locality', 'baseline:--seed 1'); baseline "
                   "runs first, and its seeds' mean final top-1 is the target")
    p.add_argument("--rerun", action="store_true", help="run again the runs OUT/runs.partial.json already holds "
                   "with the same settings (default: keep them, so a record can grow over several sittings)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=4)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=float, default=None, help="LR warm-up for every run (default: each "
                   "recipe's own: 1 epoch, none for 1gpu24h, 20 %% of the compute for efficienttrain++)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (every run)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE_PT, help="points below the baseline's final "
                   "top-1 that count as reaching it")
    p.add_argument("--extra", default="", help="more `vitdata train` options for every run, one string (write "
                   "--extra='--locality ...' when it starts with a dash)")
    p.add_argument("--out", default=os.path.join("runs", "time-to-accuracy"), help="folder of the runs")
    p.add_argument("--json", default=None, help="record path (default benchmarks/results/<device>/...)")
    p.add_argument("--plot", default=None, help="plot path (default OUT/top1_vs_time.png)")
    p.add_argument("--quiet", action="store_true", help="hide the runs' own output")
    p.add_argument("--recompute", metavar="RECORD", help="run nothing: re-derive RECORD's compute, comparisons and "
                   "headline from its measured runs with this code (e.g. after a fix to the compute estimate)")
    p.add_argument("--why", help="with --recompute: the reason, kept in the record's settings.recomputed")
    args = p.parse_args(argv)
    if args.recompute and not args.why:
        p.error("--recompute needs --why (the record keeps it)")
    if not args.recompute and not args.train:
        p.error("--train is required")
    return args


def main(argv=None, prog: str = "vitdata bench time-to-accuracy") -> int:
    args = parse_args(argv, prog)
    if args.recompute:
        rec = recompute(args.recompute, args.why)
        print(table(rec["runs"]))
        print(f"record: {args.recompute} (recomputed)")
        return 0
    planned = parse_runs(args.recipes)
    bad = sorted({r["recipe"] for r in planned} - set(RECIPES))
    if bad:
        print(f"{prog}: unknown recipes {bad}; choose from {RECIPES}", file=sys.stderr)
        return 2
    if args.val:
        train, val = args.train, args.val
        if args.train_size:
            raise SystemExit(f"{prog}: --train-size works on a split of --train (without --val)")
    else:
        train, val = split_shards(args.train, args.val_size, args.split_seed, args.train_size)
    from vitdata.data.index import open_index
    num_train = len(open_index(train))
    common = ["--train", train, "--val", val, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
              "--model", args.model, "--depth", str(args.depth), "--patch-size", str(args.patch_size),
              "--image-size", str(args.image_size), "--lr", str(args.lr),
              "--workers", str(args.workers), "--seed", str(args.seed), "--device", args.device] + \
        (["--warmup-epochs", str(args.warmup_epochs)] if args.warmup_epochs is not None else []) + \
        (["--test", args.test] if args.test else []) + args.extra.split()
    done = {} if args.rerun else kept_runs(os.path.join(args.out, "runs.partial.json"), common)
    runs = []
    for i, run in enumerate(planned):
        if run["name"] in done:
            print(f"{prog}: {run['name']}: kept from {args.out}/runs.partial.json", file=sys.stderr, flush=True)
            runs.append(done[run["name"]])
            continue
        print(f"{prog}: {run['name']} ({i + 1}/{len(planned)})", file=sys.stderr, flush=True)
        folder = os.path.join(args.out, re.sub(r"[^A-Za-z0-9_.=-]+", "_", run["name"]).strip("_"))
        runs.append(run_recipe(run["recipe"], common, folder, num_train, verbose=not args.quiet,
                               flags=run["flags"], name=run["name"]))
        # What finished so far, so a run cut off after hours still leaves its figures.
        os.makedirs(args.out, exist_ok=True)
        atomic_write(os.path.join(args.out, "runs.partial.json"),
                     (json.dumps({"common": common, "runs": partial_runs(runs, done)}, indent=1, default=float)
                      + "\n").encode())
    compare(runs, args.tolerance)
    print(table(runs))
    plot_path = plot(runs, args.plot or os.path.join(args.out, "top1_vs_time.png"))
    head = headline(runs, args.epochs, num_train)
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "plot", "quiet", "recompute", "why")}
    settings.update(recipes=[r["name"] for r in planned], num_train=num_train, train_split=train, val_split=val,
                    threads=os.environ.get("OMP_NUM_THREADS"))
    rec = {"settings": settings, "runs": runs, "plot": plot_path, "headline": head,
              "budget": f"{args.epochs} epochs of {num_train} images per recipe, batch {args.batch_size}"}
    path = record.write_record("time-to-accuracy", rec, args.json)
    print(f"record: {path}")
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
