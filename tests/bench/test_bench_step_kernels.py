"""`vitdata bench step` and `vitdata bench kernels` on CPU, and the `vitdata bench` front: the data-wait
fraction comes from the recorded per-step times; bandwidth percentages use the GPU table and are omitted for
unknown GPUs; every benchmark is reachable from the front and from its script in benchmarks/."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vitdata import bench
from vitdata.bench.record import read_record
from vitdata.bench import kernels as bench_kernels
from vitdata.bench import step as bench_step

ROOT = Path(__file__).resolve().parents[2]


def test_step_records_data_wait_fraction_from_the_raw_step_times(tiny_folder, tmp_path):
    path = tmp_path / "step.json"
    assert bench.main(["step", "--data", str(tiny_folder), "--model", "vit_tiny_patch16_224", "--size", "32",
                       "--batch-size", "4", "--steps", "2", "--warmup", "1", "--loader", "plain", "--workers", "1",
                       "--threads", "1", "--num-classes", "4", "--json", str(path)]) == 0
    record = read_record(str(path))
    assert record["what"] == "step" and record["skipped"] == []
    assert set(record["feeds"]) == {"synthetic", "vitdata"}
    for f in record["feeds"].values():
        assert len(f["wait_s"]) == len(f["step_s"]) == 2
        assert all(0 <= w <= t for w, t in zip(f["wait_s"], f["step_s"]))
        assert all(t > 0 for t in f["step_s"])   # every step timed something
        assert f["data_wait_fraction"] == pytest.approx(sum(f["wait_s"]) / sum(f["step_s"]))
    assert record["feeds"]["vitdata"]["details"]["runs_on"] == "CPU"
    assert record["settings"]["model"] == "vit_tiny_patch16_224"
    assert record["environment"]["torch"]


def test_step_without_data_runs_the_synthetic_feed_and_says_why_vitdata_was_skipped(tmp_path):
    path = tmp_path / "step.json"
    assert bench.main(["step", "--model", "vit_tiny_patch16_224", "--size", "32", "--batch-size", "2", "--steps",
                       "1", "--warmup", "1", "--num-classes", "4", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert set(record["feeds"]) == {"synthetic"}
    assert record["skipped"] == [{"feed": "vitdata", "reason": "no --data given"}]


def test_step_timing_does_not_synchronise_the_device_inside_the_loop(monkeypatch):
    """With CUDA, time_steps reads CUDA events once at the end; torch.cuda.synchronize is never called."""
    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: calls.append("sync"))

    class FakeEvent:
        clock = 0.0

        def __init__(self, enable_timing=False):
            self.t = None

        def record(self, stream=None):
            FakeEvent.clock += 1.0
            self.t = FakeEvent.clock

        def synchronize(self):
            calls.append("event-sync")

        def elapsed_time(self, other):
            return (other.t - self.t) * 1000.0   # ms

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    batches = iter([(1, 2)] * 5)
    res = bench_step.time_steps(batches, lambda *b: None, warmup=1, steps=3, cuda=True)
    assert calls == ["event-sync"]
    assert res["step_s"] == [2.0, 2.0, 2.0] and res["wait_s"] == [1.0, 1.0, 1.0]
    assert res["data_wait_fraction"] == pytest.approx(0.5) and res["clock"].startswith("CUDA events")


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 3350.0), ("NVIDIA H100 PCIe", 2000.0),
                                        ("NVIDIA H200", 4800.0), ("NVIDIA A100-SXM4-80GB", 2039.0),
                                        ("Some Future GPU", None), (None, None)])
def test_peak_bandwidth_table_by_gpu_name(name, peak):
    assert bench_kernels.peak_bandwidth_gbs(name) == peak


def test_bandwidth_percent_is_added_beside_each_figure_only_for_known_gpus():
    rec = {"lowpass_crop": [{"name": "triton kernel", "gb_per_s": 1675.0}], "patch_erase": [{"gb_per_s": 335.0}]}
    assert bench_kernels.annotate_bandwidth(rec, "NVIDIA H100 80GB HBM3") == 2
    assert rec["lowpass_crop"][0]["gb_per_s_pct_of_peak"] == pytest.approx(50.0)
    assert rec["patch_erase"][0]["gb_per_s_pct_of_peak"] == pytest.approx(10.0)
    assert rec["peak_bandwidth_gbs"] == 3350.0
    other = {"lowpass_crop": [{"gb_per_s": 1.0}]}
    assert bench_kernels.annotate_bandwidth(other, "Some Future GPU") == 0
    assert "gb_per_s_pct_of_peak" not in other["lowpass_crop"][0] and "peak_bandwidth_gbs" not in other


def test_kernels_on_cpu_time_every_implementation_and_write_one_record(tmp_path):
    path = tmp_path / "k.json"
    assert bench.main(["kernels", "--batch", "2", "--size", "32", "--crop", "16", "--patch", "8", "--repeats", "2",
                       "--iters", "1", "--warmup", "0", "--json", str(path)]) == 0
    record = read_record(str(path))
    assert record["what"] == "kernels" and record["environment"]["commit"] is not None
    for section, baseline in (("lowpass_crop", "torch.fft path (fp32)"), ("patch_erase", "timm RandomErasing (pixel)"),
                              ("loader_step", "matmul form + torch ref")):
        rows = {r["name"]: r for r in record[section]}
        assert rows[baseline]["speedup_vs_baseline"] == pytest.approx(1.0)
        for r in rows.values():
            assert len(r["times_s"]) == 2 and min(r["times_s"]) > 0, r["name"]
            assert r["gb_per_s"] > 0
    assert "peak_bandwidth_gbs" not in record   # no GPU
    # the CPU routes are timed beside what they replace, and checked against the reference first
    names = {s: {r["name"]: r for r in record[s]} for s in ("lowpass_crop", "patch_erase", "loader_step")}
    assert {"chunked CPU route (fft)", "chunked CPU route (gemm)"} <= set(names["lowpass_crop"])
    assert names["patch_erase"]["cpu route in place (normal)"]["max_abs_err"] == 0.0
    assert {"chunked + cpu route", "chunked (crop only)", "matmul form (crop only)"} <= set(names["loader_step"])
    assert names["loader_step"]["chunked (crop only)"]["max_abs_err"] < 1e-4
    assert record["environment"]["load_avg_1m_start"] is not None


def test_the_front_lists_every_benchmark_and_refuses_an_unknown_one(capsys):
    assert bench.main([]) == 0
    out = capsys.readouterr().out
    for name in bench.BENCHMARKS:
        assert name in out
    assert bench.main(["nonsense"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(bench.BENCHMARKS))
def test_every_benchmark_parses_help_from_the_front_and_from_its_script(name, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main([name, "--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
    script = ROOT / "benchmarks" / f"bench_{name.replace('-', '_')}.py"
    out = subprocess.run([sys.executable, "-P", str(script), "--help"], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr


def test_no_module_imports_a_benchmark_by_file_path():
    for path in [*(ROOT / "vitdata" / "bench").glob("*.py"), 
                 *(ROOT / "benchmarks").glob("*.py")]:
        text = path.read_text()
        assert "spec_from_file_location" not in text, path
