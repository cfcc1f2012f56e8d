"""Resident memory stays flat: over a hundred error-and-recover cycles (docs/reliability.md A8), over
2,000 steps after warm-up (F1), and with a 144 Mpx outlier that the pixel budget refuses (F2). GPU
memory over a long run (F3) is in test_gpu_memory.py.

Figures are printed; run with ``pytest -s`` to see them."""
import json
import shutil
import subprocess
import sys
import time
import os
from pathlib import Path

import numpy as np
import psutil
import pytest

from vitdata import DataError, LoaderConfig, create_loader
from vitdata.data import selfid
from vitdata.loader.config import AugmentConfig
import badinputs

# Long runs (2,000 steps, 100 error cycles) and child processes: deselected by `make test-quick`.
pytestmark = pytest.mark.heavy

WORKER = Path(__file__).with_name("rss_and_hang_worker.py")


def _median(xs):
    return float(np.median(np.asarray(xs, dtype=np.float64)))


def _mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


# -- A8 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a8_data(tmp_path_factory):
    """200 good 16 px JPEGs in 10 classes and one bad file per class (10 content kinds): each evaluation
    epoch (batch 8, unshuffled) raises 10 DataErrors at 10 different steps."""
    root = tmp_path_factory.mktemp("a8") / "val"
    m = badinputs.write_imagefolder_mixed(str(root), 200, kinds=[1, 2, 3, 4, 5, 7, 8, 15, 19, 23], num_classes=10,
                                          size=16)
    return m.root


def _tree_mb(proc):
    return (proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))) / 2**20


@pytest.mark.parametrize("backend,how", [("dali", "recover"), ("torch", "recover"), ("dali", "recreate")])
def test_a_hundred_error_and_recover_cycles_leave_resident_memory_flat(a8_data, backend, how):
    """docs/reliability.md A8 (recovery after decode errors).

    One cycle: a DataError from a bad sample (evaluation, on_error="raise"), caught as a user would.
    ``recover``: iterate the same loader on (the error consumed its step), through 10 epochs of 10 errors.
    ``recreate``: close the loader and build a new one, which reads up to its first error. Resident memory of
    this process and its workers after every cycle; drift = max after cycle 20 minus the value at cycle 20
    (warm-up: allocator pools, DALI's buffers) <= 10 MB."""
    cfg = LoaderConfig(data=a8_data, batch_size=8, image_size=16, backend=backend,
                       num_workers=1 if backend == "dali" else 0)
    proc, rss, errors = psutil.Process(), [], []
    t = time.perf_counter()
    if how == "recover":
        ld = create_loader(cfg, split="eval")
        epoch = 0
        while len(rss) < 100:
            ld.set_epoch(epoch)
            epoch += 1
            while True:
                try:
                    for _ in ld:
                        pass
                    break
                except DataError as e:
                    errors.append(e.reason)
                    rss.append(_tree_mb(proc))
        ld.close()
    else:
        for _ in range(100):
            ld = create_loader(cfg, split="eval")
            try:
                for _ in ld:
                    pass
            except DataError as e:
                errors.append(e.reason)
            ld.close()
            del ld
            rss.append(_tree_mb(proc))
    dt = time.perf_counter() - t
    drift = max(rss[20:]) - rss[20]
    print(f"\nA8 {backend} {how}: {len(errors)} cycles in {dt:.1f} s ({len(set(errors))} reasons), RSS (process + "
          f"workers) {rss[0]:.1f} MB at cycle 1, {rss[20]:.1f} at 20, max after {max(rss[20:]):.1f}, last "
          f"{rss[-1]:.1f}: drift {drift:+.1f} MB")
    assert len(errors) == 100
    assert drift <= 10.0


# -- F1 -------------------------------------------------------------------------------------------


def test_rss_stays_flat_over_2000_cpu_steps_after_200_warm_up_steps(tmp_path_factory):
    """docs/reliability.md F1 (resident memory flat).

    Training loader (torch backend in process, RandAugment magnitude 9) over 96 samples, batch 4: 2,200
    steps, 92 epochs. RSS after each of the last 2,000 steps: least-squares slope <= 1 MB per 1,000 steps
    and (max - min) <= 5 % of min. (This replaces the 500-step version: 2,000 steps fit in CI.)"""
    root = tmp_path_factory.mktemp("f1") / "train"
    selfid.write_imagefolder(str(root), 96, num_classes=4, size=16)
    ld = create_loader(LoaderConfig(data=str(root), batch_size=4, image_size=16, backend="torch", num_workers=0,
                                    augment=AugmentConfig(randaug_magnitude=9.0)))
    proc, rss, steps, epoch = psutil.Process(), [], 0, 0
    t = time.perf_counter()
    while steps < 2200:
        ld.set_epoch(epoch)
        for _ in ld:
            steps += 1
            if steps > 200:
                rss.append(_mb(proc))
            if steps == 2200:
                break
        epoch += 1
    ld.close()
    slope = np.polyfit(np.arange(len(rss)), rss, 1)[0] * 1000
    spread = (max(rss) - min(rss)) / min(rss)
    print(f"\nF1: {len(rss)} steps after 200 warm-up ({epoch} epochs), RSS {min(rss):.1f}-{max(rss):.1f} MB "
          f"({spread:.2%}), slope {slope:+.3f} MB per 1,000 steps, {time.perf_counter() - t:.1f} s")
    assert len(rss) == 2000 and slope <= 1.0 and spread <= 0.05


# -- F2 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def f2_data(tmp_path_factory):
    """96 good 32 px JPEGs, and the same with one of them replaced by a real, decodable 12000 x 12000 1-bit
    PNG (badinputs kind 20, 17 KB on disk, 144 Mpx in its header). 96 = 12 steps of 8: every epoch reads it."""
    base = tmp_path_factory.mktemp("f2")
    selfid.write_imagefolder(str(base / "plain"), 96, num_classes=4, size=32)
    shutil.copytree(base / "plain", base / "outlier")
    os.unlink(base / "outlier" / "class_01" / "img_000001.jpg")
    (base / "outlier" / "class_01" / "outlier_144mpx.png").write_bytes(badinputs.make_bytes(20))
    return str(base / "plain"), str(base / "outlier")


def _f2_run(data, steps, max_pixels, out):
    p = subprocess.run([sys.executable, "-P", str(WORKER), "f2", data, str(steps), str(max_pixels), out],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:]
    d = json.loads(Path(out).read_text())
    half = len(d["main"]) // 2
    return _median(d["main"][half:]), _median(d["workers"][half:]), d


def test_a_144_mpx_outlier_refused_by_the_pixel_budget_leaves_the_rss_plateau_unchanged(f2_data, tmp_path):
    """docs/reliability.md F2 (a pixel outlier).

    Each run is a fresh process (DALI backend, skip, default 64 Mpx budget) for 300 steps (25 epochs);
    the plateau is the median RSS over the second half, for the process (where DALI decodes) and for its
    source worker (where the header is checked). With the outlier: within 5 % of the plain set's, both,
    and the outlier is skipped as too_many_pixels every epoch. Control: the same set with the budget
    raised to 200 Mpx for 24 steps (2 epochs) decodes the outlier and shows what the check prevents."""
    plain, outlier = f2_data
    p_main, p_work, _ = _f2_run(plain, 300, 64_000_000, str(tmp_path / "plain.json"))
    o_main, o_work, d = _f2_run(outlier, 300, 64_000_000, str(tmp_path / "outlier.json"))
    c_main, _, c = _f2_run(outlier, 24, 200_000_000, str(tmp_path / "control.json"))
    assert len(d["skipped"]) == 300 // 12 and {r for _, r in d["skipped"]} == {"too_many_pixels"}
    assert all(p.endswith("outlier_144mpx.png") for p, _ in d["skipped"]) and not c["skipped"]
    print(f"\nF2: RSS plateau without the outlier {p_main:.1f} MB (worker {p_work:.1f}), with it {o_main:.1f} MB "
          f"({o_main / p_main - 1:+.2%}; worker {o_work:.1f}, {o_work / p_work - 1:+.2%}); refused {len(d['skipped'])} "
          f"times as too_many_pixels. Control, budget 200 Mpx: {c_main:.1f} MB ({c_main / p_main - 1:+.1%}), "
          f"{c['seconds']:.1f} s for 24 steps against {d['seconds'] * 24 / 300:.2f} s")
    assert abs(o_main / p_main - 1) <= 0.05 and abs(o_work / p_work - 1) <= 0.05
    assert c_main > 1.05 * p_main
