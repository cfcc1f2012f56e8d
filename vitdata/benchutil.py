"""What every vitdata benchmark shares: timing with device syncs, the environment record, the JSON file.

Records go to ``benchmarks/results/<device>/<date>-<what>.json`` (device: a slug of the GPU name, or
``cpu``) with the raw timings, so the README's table can be generated from them.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import time
from typing import Callable

from vitdata.io import atomic_write


def _version(module: str) -> str | None:
    try:
        mod = __import__(module, fromlist=["__version__"])
        return getattr(mod, "__version__", "unknown")
    except Exception:
        return None


def git_commit() -> str | None:
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


def environment() -> dict:
    """Versions and hardware: GPU, driver, CUDA, torch, triton, DALI, timm, CPU count, commit."""
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "triton": _version("triton"),
           "dali": _version("nvidia.dali"), "timm": _version("timm"), "torchvision": _version("torchvision"),
           "numpy": _version("numpy"), "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
           "commit": git_commit(), "cuda": torch.version.cuda, "gpu": None, "driver": None}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return env


def device_slug(env: dict | None = None) -> str:
    env = env or environment()
    return re.sub(r"[^a-z0-9]+", "-", env["gpu"].lower()).strip("-") if env.get("gpu") else "cpu"


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 5, items: int = 1) -> dict:
    """Run ``fn`` warmup + repeats times, each ending in a device sync. Returns seconds per call (median,
    min, max, all) and items/s from the median."""
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"median_s": med, "min_s": min(times), "max_s": max(times), "times_s": times,
            "per_s": items / med if med > 0 else float("inf")}


def results_dir() -> str:
    """benchmarks/results beside the source checkout, or $VITDATA_RESULTS, or ./benchmarks/results."""
    if os.environ.get("VITDATA_RESULTS"):
        return os.environ["VITDATA_RESULTS"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isdir(os.path.join(root, "benchmarks")):
        return os.path.join(root, "benchmarks", "results")
    return os.path.join(os.getcwd(), "benchmarks", "results")


def write_record(what: str, record: dict, path: str | None = None) -> str:
    """Write ``record`` (plus the environment) as JSON; returns the path."""
    env = record.setdefault("environment", environment())
    record.setdefault("what", what)
    record.setdefault("date", datetime.datetime.now().isoformat(timespec="seconds"))
    if path is None:
        day = datetime.date.today().isoformat()
        path = os.path.join(results_dir(), device_slug(env), f"{day}-{what}.json")
    atomic_write(path, (json.dumps(record, indent=1, default=float) + "\n").encode())
    return path
