"""benchmarks/gpu_suite.sh and its Python steps (benchmarks/gpu_suite.py) on CPU.

The dry run executes every step's real body that a CPU can (the device check with spawn workers on the CPU,
the real pytest commands, the benchmarks' real command lines with small sizes appended), so a broken entry
point fails here. What comes back from the GPU host is at most 8 files and 64 MiB: the pack step is checked
against both with photos and an oversized record in the working folder.
"""
import io
import json
import os
import re
import runpy
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.sh"
STEPS_PY = ROOT / "benchmarks" / "gpu_suite.py"
STEPS = ["01-env", "02-device", "03-pytest-gpu", "04-kernels", "05-loader", "06-step", "07-f3-memory"]
TRANSFER_MAX_FILES, TRANSFER_MAX_BYTES = 8, 64 * 2**20
# sitecustomize for a PYTHONPATH entry: every interpreter of the run refuses `import nvidia.dali`
BLOCK_DALI = """
import sys
class BlockDali:
    def find_spec(self, name, path=None, target=None):
        if name == "nvidia.dali" or name.startswith("nvidia.dali."):
            raise ImportError("nvidia.dali is blocked for this test")
sys.meta_path.insert(0, BlockDali())
"""


def _suite_module():
    return runpy.run_path(str(STEPS_PY), run_name="gpu_suite_steps")


def _plan() -> dict[str, int]:
    out = subprocess.run(["bash", str(SCRIPT), "--plan"], capture_output=True, text=True, timeout=60, check=True)
    return {row.split("\t")[0]: int(row.split("\t")[1]) for row in out.stdout.splitlines()[1:]}


def _returned(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.heavy
@pytest.mark.timeout(1800)     # about 60 s of CPU: 1 min on an idle 2-core machine, 10 min loaded 7 times over
def test_dry_run_runs_every_step_body_and_returns_one_archive(tmp_path, tiny_folder):
    out, work = tmp_path / "returned", tmp_path / "work"
    photos = tmp_path / "photos.tar.xz"           # carried as a tar: unpacked into WORK, never into OUTDIR
    subprocess.run(["tar", "-cJf", str(photos), "-C", str(tiny_folder.parent), tiny_folder.name], check=True)
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run", "--data", str(photos), "--work", str(work)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1790)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    files = _returned(out)
    assert sorted(p.name for p in files) == ["gpu-suite.tar.gz", "summary.tsv"]
    assert len(files) <= TRANSFER_MAX_FILES and sum(p.stat().st_size for p in files) <= TRANSFER_MAX_BYTES
    with tarfile.open(out / "gpu-suite.tar.gz") as tf:
        packed = {m.name: tf.extractfile(m).read().decode(errors="replace") for m in tf.getmembers()}
    rows = [line.split("\t") for line in packed["summary.tsv"].splitlines()[1:]]
    assert [r[0] for r in rows] == STEPS
    assert all(r[1] == "0" and r[4] == "dry-run" for r in rows), rows
    for step in STEPS:
        assert packed[f"logs/{step}.log"].startswith(f"== {step[:2]} {step[3:]}")
    # step 2: the device check's body on the CPU, its source workers started with spawn
    assert "2 spawned source workers seen" in packed["logs/02-device.log"]
    # step 3: the GPU test files, one result line per test written as it ended (all skipped on a CPU)
    lines = [json.loads(x) for x in packed["records/pytest-gpu.jsonl"].splitlines()]
    tests = [x for x in lines if "nodeid" in x]
    assert lines[0]["event"] == "collected" and lines[0]["count"] == len(tests) > 40
    assert {x["outcome"] for x in tests} == {"skipped"} and lines[-1] == {**lines[-1], "exitstatus": 0}
    assert "<testsuite" in packed["records/pytest-gpu.xml"]
    # steps 4-6: the real command lines ran (small sizes) and wrote their records
    for name in ("kernels", "loader", "step"):
        assert any(re.fullmatch(rf"records/\d{{4}}-\d\d-\d\d-{name}\.json", m) for m in packed), name
    assert "records/loader.png" in packed
    # step 7: the CPU test of the F3 plan ran with the real schedule, the GPU test skipped
    f3 = [json.loads(x) for x in packed["records/pytest-f3.jsonl"].splitlines() if "nodeid" in x]
    assert sum(x["outcome"] == "passed" for x in f3) >= 4 and sum(x["outcome"] == "skipped" for x in f3) == 1
    # what a real run executes: the full-size commands, without the dry run's small sizes
    device, pytest_gpu, kernels, loader, step, f3 = packed["commands.txt"].splitlines()
    assert device.rstrip().endswith("benchmarks/gpu_suite.py device")
    assert "-m pytest" in pytest_gpu and "-m gpu" in pytest_gpu and "test_gpu_memory" not in pytest_gpu
    assert "vitdata bench kernels" in kernels and "--device cpu" not in kernels
    assert "vitdata bench loader" in loader and "--batch-size 256" in loader and "--batch-size 4" not in loader
    assert f"--data {work / 'photos' / tiny_folder.name} " in loader and (work / "photos" / tiny_folder.name).is_dir()
    assert "vit_small_patch16_224" in step and "vit_tiny" not in step
    assert "VITDATA_F3_STEPS=1000" in f3 and f3.rstrip().endswith("tests/reliability/test_gpu_memory.py")
    assert not any(m.startswith(("photos", "work")) for m in packed)


@pytest.mark.heavy
@pytest.mark.timeout(900)
def test_without_dali_the_suite_skips_the_dali_steps_at_once_and_says_why(tmp_path, tiny_folder):
    # an interpreter whose `import nvidia.dali` fails, as on a GPU host before DALI is carried over
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "sitecustomize.py").write_text(BLOCK_DALI)
    out, work = tmp_path / "returned", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": os.pathsep.join([str(tmp_path / "block"), str(ROOT)])}
    res = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run", "--data", str(tiny_folder), "--work", str(work)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=890)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-2000:]
    rows = {r.split("\t")[0]: r.split("\t") for r in (work / "summary.tsv").read_text().splitlines()[1:]}
    assert list(rows) == STEPS
    assert rows["01-env"][1] == "1" and "DALI NOT importable" in (work / "logs" / "01-env.log").read_text()
    for step in ("02-device", "05-loader", "06-step", "07-f3-memory"):
        assert rows[step][1:3] == ["skip", "0"], rows[step]
        assert "skipped: step 1 found no importable DALI" in (work / "logs" / f"{step}.log").read_text()
    assert rows["03-pytest-gpu"][1] == rows["04-kernels"][1] == "0"
    pytest_gpu = (work / "logs" / "03-pytest-gpu.log").read_text().splitlines()[0]
    assert "tests/kernels/test_lowpass.py" in pytest_gpu and "tests/loader/test_gpu.py" not in pytest_gpu
    with tarfile.open(out / "gpu-suite.tar.gz") as tf:
        assert "logs/05-loader.log" in tf.getnames()


def test_the_step_budgets_fit_in_400_seconds_and_the_header_states_them():
    plan = _plan()
    steps = {k: v for k, v in plan.items() if k[:2].isdigit()}
    assert list(steps) == STEPS
    assert sum(steps.values()) == plan["steps"] <= plan["total"] <= 400
    # the usage text's table says the same budgets
    header = SCRIPT.read_text().split("\nset -u", 1)[0]
    stated = {f"{int(n):02d}-{name}": int(b) for n, name, b in re.findall(r"#\s+(\d) ([\w-]+)\s+\[(\d+)\]", header)}
    assert stated == steps


def test_the_gpu_step_runs_exactly_the_files_that_hold_gpu_tests():
    listed = re.search(r"GPU_TEST_FILES=\(([^)]*)\)", SCRIPT.read_text()).group(1).split()
    gpu = re.compile(r"^(pytestmark = pytest\.mark\.gpu|@pytest\.mark\.gpu)\b", re.M)
    marked = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if gpu.search(p.read_text()))
    assert sorted(listed) + ["tests/reliability/test_gpu_memory.py"] == marked   # F3 is step 7


def test_a_spawned_worker_importing_the_steps_file_builds_no_loader():
    """A spawn child imports the main script as ``__mp_main__``: the loader must stay under its guard."""
    code = (f"import runpy, sys, time; t = time.time(); runpy.run_path({str(STEPS_PY)!r}, run_name='__mp_main__'); "
            "print(sorted(m for m in ('torch', 'vitdata', 'nvidia.dali') if m in sys.modules), time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    modules, seconds = out.stdout.rsplit(" ", 1)
    assert modules == "[]" and float(seconds) < 5


def test_pack_returns_two_files_under_the_transfer_limits_without_photos(tmp_path):
    pack = _suite_module()["pack"]
    work, out = tmp_path / "work", tmp_path / "returned"
    (work / "logs").mkdir(parents=True)
    (work / "records").mkdir()
    for i, step in enumerate(STEPS):
        (work / "logs" / f"{step}.log").write_text(f"== {step}\n" + "line\n" * (10 * i))
    big_log = "".join(f"pytest line {i}\n" for i in range(600_000)) + "THE LAST LINE\n"   # ~11 MB
    (work / "logs" / "03-pytest-gpu.log").write_text(big_log)
    for name in ("kernels", "loader", "step", "loader-backends", "oracle", "index"):
        (work / "records" / f"2026-12-07-{name}.json").write_text(json.dumps({"name": name}))
    (work / "records" / "loader.png").write_bytes(os.urandom(300_000))
    (work / "records" / "pytest-gpu.xml").write_text("<testsuite/>")
    (work / "records" / "huge-trace.json").write_bytes(os.urandom(50 * 2**20))    # over what the archive keeps
    (work / "summary.tsv").write_text("step\trc\n01-env\t0\n")
    (work / "commands.txt").write_text("python -m vitdata bench kernels\n")
    photos = work / "photos" / "n01440764"
    photos.mkdir(parents=True)
    for i in range(45):
        (photos / f"img{i}.JPEG").write_bytes(os.urandom(2**20))
    (work / "scratch.bin").write_bytes(os.urandom(2**20))
    t0 = time.perf_counter()
    pack(str(work), str(out))
    seconds = time.perf_counter() - t0
    files = _returned(out)
    assert sorted(p.name for p in files) == ["gpu-suite.tar.gz", "summary.tsv"]
    assert len(files) <= TRANSFER_MAX_FILES and sum(p.stat().st_size for p in files) <= TRANSFER_MAX_BYTES
    with tarfile.open(out / "gpu-suite.tar.gz") as tf:
        names = set(tf.getnames())
        log = tf.extractfile("logs/03-pytest-gpu.log").read()
        manifest = tf.extractfile("MANIFEST.txt").read().decode()
    assert {f"logs/{s}.log" for s in STEPS} | {"summary.tsv", "commands.txt", "records/loader.png"} <= names
    assert not any(n.startswith("photos") or n == "scratch.bin" for n in names)
    assert log.endswith(b"THE LAST LINE\n") and len(log) == 4 * 2**20      # a long log keeps its tail
    assert "records/huge-trace.json" not in names and "records/huge-trace.json: 52428800 bytes, left out" in manifest
    assert (out / "summary.tsv").read_text() == (work / "summary.tsv").read_text()
    assert seconds < 30
    # packing again replaces the archive in place: still two files
    pack(str(work), str(out))
    assert len(_returned(out)) == 2


def test_the_suite_refuses_a_missing_outdir_and_a_work_folder_inside_it(tmp_path):
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "OUTDIR" in res.stderr
    res = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "--work", str(tmp_path / "out" / "w"),
                          "--dry-run"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "must not be inside OUTDIR" in res.stderr


def test_the_environment_step_says_when_shared_memory_is_too_small():
    verdict = _suite_module()["shm_verdict"]
    ok, line = verdict(64 * 2**20)               # a container runtime's default
    assert not ok and "0.06 GiB: TOO SMALL" in line and "bus errors" in line
    assert verdict(16 * 2**30)[0] and not verdict(None)[0]
