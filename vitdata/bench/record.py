"""What every vitdata benchmark shares: the record format (one writer, one reader), timing, the environment.

A record is one JSON object per run of one benchmark, at ``<results>/<device>/<date>-<what>.json``
(device: a slug of the GPU name, or ``cpu``). Its top-level fields are always:

===============  ==================================================================================
field            meaning
===============  ==================================================================================
``format``       ``RECORD_FORMAT`` (``"vitdata-bench/1"``)
``what``         the benchmark (``loader``, ``kernels``, ``step``, ``index``, ...)
``date``         ISO date and time of the run (local time, seconds)
``environment``  python, torch, triton, dali, timm, torchvision, numpy, cpu_count, cpus_usable, cpu,
                 cuda, gpu, driver, commit (``<sha>`` or ``<sha>-dirty``; None outside a checkout)
``settings``     the run's parameters
``headline``     optional: ``[{"measured", "figure", "compared"}]``, the lines the README table quotes
                 for benchmarks it has no renderer of its own for
===============  ==================================================================================

everything else is the benchmark's raw timings and figures. :func:`write_record` is the only writer and
:func:`read_record` / :func:`load_records` the only readers; a file that is not in this format is refused
with a message, never guessed at.
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import time
from typing import Callable

from vitdata.io import atomic_write

RECORD_FORMAT = "vitdata-bench/1"
REQUIRED = ("format", "what", "date", "environment", "settings")
ENVIRONMENT_FIELDS = ("python", "torch", "triton", "dali", "timm", "torchvision", "numpy", "cpu_count", "cpu",
                      "commit", "cuda", "gpu", "driver")


class RecordError(ValueError):
    """A file that is not a benchmark record in ``RECORD_FORMAT``; the message names the file and the field."""


def _version(module: str) -> str | None:
    try:
        mod = __import__(module, fromlist=["__version__"])
        return getattr(mod, "__version__", "unknown")
    except Exception:
        return None


def git_commit() -> str | None:
    """HEAD of the checkout vitdata is imported from, ``-dirty`` when tracked code (not records) changed."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        # the records themselves are rewritten by every benchmark run: they do not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!benchmarks/results"], cwd=os.path.dirname(here),
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; a container or ``taskset`` may allow fewer than the
    machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def environment() -> dict:
    """Versions and hardware: GPU, driver, CUDA, torch, triton, DALI, timm, CPU count, commit."""
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "triton": _version("triton"),
           "dali": _version("nvidia.dali"), "timm": _version("timm"), "torchvision": _version("torchvision"),
           "numpy": _version("numpy"), "cpu_count": os.cpu_count(), "cpus_usable": usable_cpus(),
           "cpu": platform.processor() or platform.machine(), "commit": git_commit(), "cuda": torch.version.cuda,
           "gpu": None, "driver": None}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True,
                                           timeout=10).stdout.strip().splitlines()[0] or None
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    return env


def device_slug(env: dict | None = None) -> str:
    env = env or environment()
    return re.sub(r"[^a-z0-9]+", "-", env["gpu"].lower()).strip("-") if env.get("gpu") else "cpu"


def sync(device_wide: bool = False) -> None:
    """Wait for the work queued on the current CUDA stream (what a consumer of a batch waits for); no-op on
    CPU. Not the whole device: DALI's prefetch of later batches on its own stream is not this batch's cost.
    ``device_wide``: every stream (``torch.cuda.synchronize``), for a stage timed alone whose work runs on
    DALI's streams."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        if device_wide:
            torch.cuda.synchronize()
        else:
            torch.cuda.current_stream().synchronize()


def measure(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 5, iters: int = 1, items: int = 1,
            device_wide: bool = False) -> dict:
    """The one timer of the benchmarks: ``warmup`` untimed calls of ``fn``, a :func:`sync`, then ``repeats``
    repeats of ``iters`` calls each, timed on the host clock up to a :func:`sync` at the repeat's end (so
    queued device work is counted, and a repeat of many short calls is not dominated by the sync).
    Returns seconds per call (``median_s``, ``min_s``, ``max_s``, every repeat's ``times_s``) and
    ``per_s``: ``items`` per call / the median."""
    for _ in range(warmup):
        fn()
    sync(device_wide)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync(device_wide)
        times.append((time.perf_counter() - t0) / iters)
    med = statistics.median(times)
    return {"median_s": med, "min_s": min(times), "max_s": max(times), "times_s": times,
            "per_s": items / med if med > 0 else float("inf")}


def results_dir() -> str:
    """Where records go by default: ``$VITDATA_RESULTS``, else ``./benchmarks/results`` under the current
    directory (never beside the imported source: an installed or read-only checkout stays untouched)."""
    return os.environ.get("VITDATA_RESULTS") or os.path.join(os.getcwd(), "benchmarks", "results")


def record_path(what: str, env: dict, path: str | None = None) -> str:
    """``path`` itself; a directory ``path`` (existing, or ending in a separator) gets the file name
    ``<date>-<what>.json``; None gives ``results_dir()/<device>/<date>-<what>.json``."""
    name = f"{datetime.date.today().isoformat()}-{what}.json"
    if path is None:
        return os.path.join(results_dir(), device_slug(env), name)
    if os.path.isdir(path) or path.endswith(os.sep):
        return os.path.join(path, name)
    return path


def write_record(what: str, record: dict, path: str | None = None) -> str:
    """Write ``record`` in ``RECORD_FORMAT`` (adding ``format``, ``what``, ``date`` and the environment where
    absent) atomically; returns the path. ``record`` must hold ``settings``."""
    env = record.setdefault("environment", environment())
    record.setdefault("format", RECORD_FORMAT)
    record.setdefault("what", what)
    record.setdefault("date", datetime.datetime.now().isoformat(timespec="seconds"))
    record.setdefault("settings", {})
    check_record(record, f"<{what} record>")
    path = record_path(what, env, path)
    atomic_write(path, (json.dumps(record, indent=1, default=float) + "\n").encode())
    return path


def check_record(rec, name: str) -> dict:
    """``rec`` itself when it is a record in ``RECORD_FORMAT``, else RecordError naming what is wrong."""
    if not isinstance(rec, dict):
        raise RecordError(f"{name}: not a JSON object")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise RecordError(f"{name}: missing {', '.join(missing)} (not a {RECORD_FORMAT} record)")
    if rec["format"] != RECORD_FORMAT:
        raise RecordError(f"{name}: format {rec['format']!r}, expected {RECORD_FORMAT!r}")
    if not isinstance(rec["environment"], dict) or not isinstance(rec["settings"], dict):
        raise RecordError(f"{name}: environment and settings must be objects")
    return rec


def read_record(path: str) -> dict:
    """The record at ``path``; RecordError when it is unreadable or not in ``RECORD_FORMAT``."""
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError) as e:
        raise RecordError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
    return check_record(rec, path)


def load_records(results: str, on_error: Callable[[RecordError], None] | None = None) -> list[dict]:
    """Every record under ``results/<device>/*.json`` with ``_path`` (absolute) and ``_device`` (the folder)
    added. Files that are not records go to ``on_error`` (default: raise)."""
    out = []
    for path in sorted(glob.glob(os.path.join(results, "*", "*.json"))):
        try:
            rec = read_record(path)
        except RecordError as e:
            if on_error is None:
                raise
            on_error(e)
            continue
        rec["_path"] = os.path.abspath(path)
        rec["_device"] = os.path.basename(os.path.dirname(path))
        out.append(rec)
    return out
