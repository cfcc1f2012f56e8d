"""`vitdata bench step` and `vitdata bench kernels` on CPU: the data-wait fraction comes from the recorded
per-step times; bandwidth percentages use the GPU table and are omitted for unknown GPUs."""
import json

import pytest

from vitdata import bench


def test_step_records_data_wait_fraction_from_the_raw_step_times(tiny_folder, tmp_path):
    path = tmp_path / "step.json"
    assert bench.main(["step", "--data", str(tiny_folder), "--model", "vit_tiny_patch16_224", "--size", "32",
                       "--batch-size", "4", "--steps", "2", "--warmup", "1", "--loader", "plain", "--workers", "1",
                       "--threads", "1", "--num-classes", "4", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["what"] == "step" and record["skipped"] == []
    assert set(record["feeds"]) == {"synthetic", "vitdata"}
    for f in record["feeds"].values():
        assert len(f["wait_s"]) == len(f["step_s"]) == 2
        assert all(0 <= w <= t for w, t in zip(f["wait_s"], f["step_s"]))
        assert f["data_wait_fraction"] == pytest.approx(sum(f["wait_s"]) / sum(f["step_s"]))
    assert record["settings"]["model"] == "vit_tiny_patch16_224"
    assert record["environment"]["torch"]


def test_step_without_data_runs_the_synthetic_feed_and_says_why_vitdata_was_skipped(tmp_path):
    path = tmp_path / "step.json"
    assert bench.main(["step", "--model", "vit_tiny_patch16_224", "--size", "32", "--batch-size", "2", "--steps",
                       "1", "--warmup", "1", "--num-classes", "4", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert set(record["feeds"]) == {"synthetic"}
    assert record["skipped"] == [{"feed": "vitdata", "reason": "no --data given"}]


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 3350.0), ("NVIDIA H100 PCIe", 2000.0),
                                        ("NVIDIA H200", 4800.0), ("NVIDIA A100-SXM4-80GB", 2039.0),
                                        ("Some Future GPU", None), (None, None)])
def test_peak_bandwidth_table_by_gpu_name(name, peak):
    assert bench.peak_bandwidth_gbs(name) == peak


def test_bandwidth_percent_is_added_beside_each_figure_only_for_known_gpus():
    rec = {"lowpass_crop": [{"name": "triton kernel", "gb_per_s": 1675.0}], "patch_erase": [{"gb_per_s": 335.0}]}
    assert bench.annotate_bandwidth(rec, "NVIDIA H100 80GB HBM3") == 2
    assert rec["lowpass_crop"][0]["gb_per_s_pct_of_peak"] == pytest.approx(50.0)
    assert rec["patch_erase"][0]["gb_per_s_pct_of_peak"] == pytest.approx(10.0)
    assert rec["peak_bandwidth_gbs"] == 3350.0
    other = {"lowpass_crop": [{"gb_per_s": 1.0}]}
    assert bench.annotate_bandwidth(other, "Some Future GPU") == 0
    assert "gb_per_s_pct_of_peak" not in other["lowpass_crop"][0] and "peak_bandwidth_gbs" not in other


def test_kernels_says_it_is_unavailable_without_the_checkout_benchmark(monkeypatch, capsys):
    monkeypatch.setattr(bench, "_kernel_bench_module", lambda: (None, "/nowhere/benchmarks/bench_kernels.py"))
    assert bench.main(["kernels"]) == 2
    assert "unavailable" in capsys.readouterr().err
