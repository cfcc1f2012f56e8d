"""benchmarks/gpu_suite.sh --dry-run on CPU: every step's command line is printed in order of value, each
entry point exists and parses, and the summary and logs land in OUTDIR as the steps end."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.sh"
STEPS = ["01-env", "02-device", "03-pytest-gpu", "04-kernels", "05-loader", "06-step", "07-f3-memory"]


@pytest.mark.heavy
def test_dry_run_checks_every_step_and_writes_the_commands_a_gpu_run_executes(tmp_path, tiny_folder):
    out = tmp_path / "suite"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run", "--data", str(tiny_folder)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=900)
    summary = (out / "summary.tsv").read_text().splitlines()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    rows = [line.split("\t") for line in summary[1:]]
    assert [r[0] for r in rows] == STEPS
    assert all(r[1] == "0" and r[4] == "dry-run" for r in rows), rows
    for step in STEPS:
        assert (out / f"{step}.log").read_text().startswith(f"== {step[:2]} {step[3:]}")
    commands = (out / "commands.txt").read_text().splitlines()
    assert len(commands) == 6
    device, pytest_gpu, kernels, loader, step, f3 = commands
    assert "device_check.py" in device
    assert "-m pytest -m gpu" in pytest_gpu and "--ignore=tests/reliability/test_gpu_memory.py" in pytest_gpu
    assert "vitdata bench kernels" in kernels and str(out / "records") in kernels
    assert "vitdata bench loader" in loader and str(tiny_folder) in loader
    assert "vitdata bench step" in step and "vit_small_patch16_224" in step
    assert "VITDATA_F3_STEPS=" in f3 and f3.rstrip().endswith("tests/reliability/test_gpu_memory.py")
    assert "usage:" in (out / "05-loader.log").read_text()
    assert not list((out / "records").glob("*.json"))   # nothing heavy ran


def test_the_suite_budgets_fit_in_nine_minutes():
    text = SCRIPT.read_text()
    budgets = [int(line.split()[3]) for line in text.splitlines()
               if line.strip().startswith("run_step 0") and "$DRY" not in line and line.split()[3].isdigit()]
    real = [b for b in budgets[-6:]] + [budgets[0]]   # env + the six steps of a real run
    assert sum(real) <= 540, real
    assert "TOTAL_BUDGET=540" in text


def test_the_suite_refuses_a_missing_outdir():
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "OUTDIR" in res.stderr
