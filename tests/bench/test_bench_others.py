"""The smaller benchmarks (index, sampler, oracle, loader-backends) run from the `vitdata bench` front with
tiny settings, time something, and write one record each in the one format."""
import pytest

from vitdata import bench
from vitdata.bench.record import RECORD_FORMAT, read_record


def _record(path):
    rec = read_record(str(path))
    assert rec["format"] == RECORD_FORMAT and rec["environment"]["torch"]
    return rec


def test_index_times_the_build_and_the_reads(tiny_shards, tmp_path):
    path = tmp_path / "index.json"
    assert bench.main(["index", "--data", str(tiny_shards), "--reads", "200", "--repeats", "2",
                       "--json", str(path)]) == 0
    rec = _record(path)
    assert rec["what"] == "index" and len(rec["build"]["times_s"]) == 2
    assert min(rec["build"]["times_s"]) > 0 and min(rec["reads"]["times_s"]) > 0
    assert rec["reads"]["per_s"] == pytest.approx(200 / rec["reads"]["median_s"])


def test_sampler_times_uniform_and_weighted_orders(tmp_path):
    path = tmp_path / "sampler.json"
    assert bench.main(["sampler", "--num-samples", "5000", "--batch-size", "16", "--world-size", "2", "--repeats", "2",
                       "--json", str(path)]) == 0
    rec = _record(path)
    for mode in ("uniform", "weighted"):
        assert len(rec[mode]["times_s"]) == 2 and min(rec[mode]["times_s"]) > 0
    assert len(rec["headline"]) == 2


def test_oracle_times_report_against_cross_entropy_and_the_plan(tmp_path):
    path = tmp_path / "oracle.json"
    assert bench.main(["oracle", "--samples", "5000", "--repeats", "1", "--steps", "3", "--batch", "16",
                       "--json", str(path)]) == 0
    rec = _record(path)
    report = rec["results"]["report_cpu_256"]
    assert report["baseline_cross_entropy"]["median"] > 0 and report["report_losses"]["median"] > 0
    assert rec["results"]["plan_cpu"]["total_s"]["median"] > 0


def test_loader_backends_times_both_backends_in_one_run(tiny_folder, tmp_path):
    path = tmp_path / "lb.json"
    assert bench.main(["loader-backends", "--data", str(tiny_folder), "--image-size", "32", "--batch-size", "4",
                       "--threads", "1", "--workers", "1", "--epochs", "1", "--repeats", "1",
                       "--json", str(path)]) == 0
    rec = _record(path)
    for backend in ("dali", "torch"):
        (rep,) = rec["results"][backend]["repeats"]
        assert rep["images"] > 0 and rep["seconds"] > 0
    assert rec["ratio_dali_over_torch"] > 0
