"""`vitdata bench loader` on CPU with tiny settings: every row runs or says why not, the record holds
every field, and the figures and ratios follow from the raw timings recorded."""
import json
import statistics

import pytest

from vitdata import bench
from vitdata.bench.record import ENVIRONMENT_FIELDS, RECORD_FORMAT, read_record
from vitdata.bench import common, feeds
from vitdata.bench import loader as bench_loader

from .conftest import TINY

SETTINGS_FIELDS = ("data", "data_kind", "samples", "cycled", "samples_per_epoch", "size", "batch_size", "dtype",
                   "device", "workers", "threads", "warmup_batches", "windows", "steps_per_window", "seed")
ROW_FIELDS = ("row", "name", "label", "window_s", "images_per_window", "images_per_s_windows", "images_per_s",
              "images_per_s_min", "images_per_s_max", "spread_pct", "ratio_to_row4", "details")


@pytest.fixture(scope="module")
def full_run(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    rc = bench.main(["loader", "--data", str(tiny_folder), *TINY, "--json", str(out / "loader.json"),
                     "--plot", str(out / "loader.png")])
    assert rc == 0
    return json.loads((out / "loader.json").read_text()), out


@pytest.mark.heavy
def test_every_row_runs_or_is_listed_as_skipped_with_a_reason(full_run):
    record, _ = full_run
    ran = {r["row"] for r in record["rows"]}
    skipped = {r["row"]: r["reason"] for r in record["skipped"]}
    assert ran | set(skipped) == set(feeds.ROWS)
    assert not ran & set(skipped)
    assert all(reason for reason in skipped.values())
    # rows that depend on nothing but DALI, torch and timm always run here
    assert {2, 3, 4, 5, 6, 7} <= ran, skipped
    for r in record["rows"]:
        assert r["images_per_s"] > 0
        assert all(t > 0 for t in r["window_s"])   # every window timed something


@pytest.mark.heavy
def test_curriculum_row_runs_and_reports_a_measured_stage_split(full_run):
    record, _ = full_run
    skipped = {r["row"]: r["reason"] for r in record["skipped"]}
    assert 1 not in skipped, skipped.get(1)
    split = record["stage_split_row1"]
    assert set(bench_loader.STAGES) <= set(split), split.get("error")
    for stage in bench_loader.STAGES:
        assert split[stage]["median_s"] > 0, stage     # each stage timed something
        assert split[stage]["how"], stage
    for stage in ("read", "decode", "crop_resize", "augment", "kernels", "hand_over"):
        assert len(split[stage]["times_s"]) == 3 and min(split[stage]["times_s"]) > 0, stage
    assert "image_slice" in split["decode"]["how"] and "resize_window" in split["crop_resize"]["how"]
    assert "augment_graph" in split["augment"]["how"] and "RandAugment" in split["augment"]["how"]
    assert "remainder" not in split   # every stage is timed alone, nothing is derived by subtraction
    plain = next(r for r in record["rows"] if r["row"] == 2)["stage_split"]
    assert "kernels" not in plain and all(plain[k]["median_s"] > 0 for k in ("decode", "crop_resize", "augment"))


@pytest.mark.heavy
def test_dali_rows_record_the_device_id_their_graph_ran_with_and_are_gpu_only_with_one(full_run):
    record, _ = full_run
    rows = {r["row"]: r for r in record["rows"]}
    for n in (1, 2, 3):
        d = rows[n]["details"]
        assert d["dali_device_id"] is None and d["runs_on"] == "CPU", n   # no CUDA here
    assert rows[1]["details"]["config"]["dali_device_id"] is None
    assert record["stage_split_row1"]["dali_device_id"] is None
    assert "runs_on" not in rows[4]["details"]
    assert feeds.where(0) == {"dali_device_id": 0, "runs_on": "GPU"}
    assert feeds.where(None)["runs_on"] == "CPU"


@pytest.mark.heavy
def test_record_holds_environment_settings_and_raw_timings(full_run):
    record, _ = full_run
    assert record["what"] == "loader" and record["date"]
    assert record["format"] == RECORD_FORMAT
    for f in ENVIRONMENT_FIELDS:
        assert f in record["environment"], f
    for f in SETTINGS_FIELDS:
        assert f in record["settings"], f
    s = record["settings"]
    assert (s["size"], s["batch_size"], s["workers"], s["threads"], s["windows"], s["steps_per_window"]) == \
        (32, 4, 1, 1, 2, 2)
    assert s["samples"] == 24 and s["samples_per_epoch"] == 24 * s["cycled"]
    for r in record["rows"]:
        for f in ROW_FIELDS:
            assert f in r, (r["row"], f)
        assert len(r["window_s"]) == 2 and r["images_per_window"] == 2 * 4
    assert record["baseline_row"] == 4
    assert set(record["row_labels"]) == {str(k) for k in feeds.ROWS}
    rows = {r["row"]: r for r in record["rows"]}
    assert rows[1]["ratio_to_row7"] == pytest.approx(rows[1]["images_per_s"] / rows[7]["images_per_s"])


@pytest.mark.heavy
def test_figures_and_ratios_follow_from_the_recorded_timings(full_run):
    record, _ = full_run
    rows = {r["row"]: r for r in record["rows"]}
    base = rows[4]["images_per_s"]
    for r in rows.values():
        rates = [r["images_per_window"] / t for t in r["window_s"]]
        assert r["images_per_s_windows"] == pytest.approx(rates)
        assert r["images_per_s"] == pytest.approx(statistics.median(rates))
        assert r["images_per_s_min"] == pytest.approx(min(rates))
        assert r["images_per_s_max"] == pytest.approx(max(rates))
        assert r["spread_pct"] == pytest.approx(100 * (max(rates) - min(rates)) / statistics.median(rates))
        assert r["ratio_to_row4"] == pytest.approx(r["images_per_s"] / base)
    assert rows[4]["ratio_to_row4"] == pytest.approx(1.0)


@pytest.mark.heavy
def test_table_names_every_row_and_the_plot_is_a_png(full_run, tiny_folder):
    record, out = full_run
    table = bench_loader.format_table(record)
    for r in record["rows"]:
        assert r["name"] in table and f"{r['ratio_to_row4']:.2f}x" in table
    for r in record["skipped"]:
        assert r["reason"] in table
    assert (out / "loader.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_row_skipped_by_flag_says_so_and_ratios_without_the_baseline_are_none(tiny_folder, tmp_path, capsys):
    path = tmp_path / "r.json"
    assert bench.main(["loader", "--data", str(tiny_folder), *TINY, "--rows", "4,6", "--skip", "4",
                       "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["skipped"] == [{"row": 4, "name": "torch-dataloader", "reason": "skipped with --skip", "size": 32}]
    assert [r["row"] for r in record["rows"]] == [6]
    assert record["rows"][0]["ratio_to_row4"] is None
    assert "skipped with --skip" in capsys.readouterr().out


def test_without_dali_the_dali_row_is_skipped_with_the_reason(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_loader, "dali_importable", lambda: "nvidia.dali cannot be imported (simulated)")
    monkeypatch.setattr(feeds, "dali_importable", lambda: "nvidia.dali cannot be imported (simulated)")
    path = tmp_path / "r.json"
    assert bench.main(["loader", "--data", str(tiny_folder), *TINY, "--rows", "3,6", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["skipped"] == [{"row": 3, "name": "dali", "reason": "nvidia.dali cannot be imported (simulated)",
                                  "size": 32}]


def test_without_the_vitdata_loader_its_rows_are_skipped_with_the_reason(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(feeds, "loader_importable", lambda: "vitdata.loader cannot be imported (simulated)")
    path = tmp_path / "r.json"
    assert bench.main(["loader", "--data", str(tiny_folder), *TINY, "--rows", "1,2,6", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert {r["row"]: r["reason"] for r in record["skipped"]} == {
        1: "vitdata.loader cannot be imported (simulated)", 2: "vitdata.loader cannot be imported (simulated)"}
    assert [r["row"] for r in record["rows"]] == [6]


def test_shards_run_through_the_webdataset_reader_and_the_tar_dataset(tiny_shards, tmp_path):
    path = tmp_path / "r.json"
    assert bench.main(["loader", "--data", str(tiny_shards), *TINY, "--rows", "3,4", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["settings"]["data_kind"] == "wds"
    assert [r["row"] for r in record["rows"]] == [3, 4], record["skipped"]
    assert record["rows"][0]["details"]["reader"] == "webdataset"
    assert record["rows"][1]["details"]["dataset"] == "TarDataset"


def test_small_data_is_cycled_through_copies_so_every_row_reads_long_epochs(tiny_folder, tiny_shards):
    from vitdata.data.index import open_index

    with common.prepared_data(str(tiny_folder), 24 * 3 + 1) as (root, idx, cycle):
        assert cycle == 4 and len(idx) == 96 and idx.kind == "imagefolder"
        assert sorted(idx.classes) == sorted(open_index(str(tiny_folder)).classes)
    assert not __import__("os").path.exists(root)
    with common.prepared_data(str(tiny_shards), 48) as (root, idx, cycle):
        assert cycle == 2 and len(idx) == 48 and idx.kind == "wds"
    with common.prepared_data(str(tiny_folder), 10) as (root, idx, cycle):
        assert root == str(tiny_folder) and cycle == 1


def test_json_without_a_path_writes_under_the_current_directory_not_the_checkout(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VITDATA_RESULTS", raising=False)
    assert bench.main(["loader", "--data", str(tiny_folder), *TINY, "--rows", "6"]) == 0
    written = list((tmp_path / "benchmarks" / "results" / "cpu").glob("*-loader.json"))
    assert len(written) == 1 and read_record(str(written[0]))["what"] == "loader"
    (tmp_path / "out").mkdir()
    assert bench.main(["loader", "--data", str(tiny_folder), *TINY, "--rows", "6", "--json", "out"]) == 0
    assert len(list((tmp_path / "out").glob("*-loader.json"))) == 1


@pytest.mark.parametrize("device, cpus, expect", [
    ("cuda", 16, (8, 8, 16)), ("cuda:1", 2, (1, 1, 2)), ("cuda", 1, (1, 0, 1)), ("cpu", 16, (16, 0, 16)),
    ("cpu", 2, (2, 0, 2))])
def test_default_parallelism_splits_the_usable_cpus_without_oversubscribing(device, cpus, expect):
    par = common.Parallelism.resolve(device, cpus=cpus)
    assert (par.threads, par.source_workers, par.workers) == expect
    if device.startswith("cuda"):
        assert par.threads + par.source_workers <= max(cpus, 1)
    assert common.Parallelism.resolve("cuda", threads=3, cpus=16).threads == 3


def test_a_vitdata_row_is_labelled_gpu_exactly_when_the_loader_reports_a_dali_device_id(tiny_folder, tmp_path,
                                                                                          monkeypatch):
    from vitdata.loader.loader import Loader

    path = tmp_path / "r.json"
    monkeypatch.setattr(Loader, "dali_device_id", property(lambda self: 0))   # as a GPU-built graph reports
    assert bench.main(["loader", "--data", str(tiny_folder), *TINY, "--rows", "2", "--json", str(path)]) == 0
    (row,) = json.loads(path.read_text())["rows"]
    assert row["details"]["runs_on"] == "GPU" and row["details"]["config"]["dali_device_id"] == 0
    assert "GPU 0" in bench_loader.format_table({"rows": [row], "skipped": []})


def test_a_run_at_several_sizes_records_each_rows_cost_per_image_against_its_largest_size(tiny_folder, tmp_path):
    path = tmp_path / "r.json"
    args = [a for a in TINY if a not in ("--size", "32")]
    assert bench.main(["loader", "--data", str(tiny_folder), *args, "--sizes", "16,32", "--rows", "2,4,6",
                       "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["settings"]["sizes"] == [16, 32] and record["settings"]["size"] == 32
    got = {(r["row"], r["size"]): r for r in record["rows"]}
    assert set(got) == {(row, size) for row in (2, 4, 6) for size in (16, 32)}
    for (row, size), r in got.items():
        assert r["cost_per_image_ms"] == pytest.approx(1000 / r["images_per_s"])
        assert r["cost_vs_largest"] == pytest.approx(r["cost_per_image_ms"] / got[(row, 32)]["cost_per_image_ms"])
        assert r["ratio_to_row4"] == pytest.approx(r["images_per_s"] / got[(4, size)]["images_per_s"])
        if row == 2:   # each vitdata row at each size has its own per-stage split
            assert r["stage_split"]["size"] == size and r["stage_split"]["crop_resize"]["median_s"] > 0
    table = bench_loader.format_costs(record)
    assert "16 px" in table and "32 px" in table and "vitdata-plain" in table
