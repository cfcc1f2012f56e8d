"""benchmarks/readme_table.py renders the committed records, naming the device and commit of each figure,
and rewrites only the part of README.md between the markers."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rt():
    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "benchmarks" / "readme_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _loader_record(gpu, commit, date, rate4=100.0):
    row = lambda n, name, rate: {"row": n, "name": name, "images_per_s": rate, "spread_pct": 3.0,  # noqa: E731
                                 "ratio_to_row4": rate / rate4}
    return {"format": "vitdata-bench/1", "what": "loader", "date": date, "baseline_row": 4,
            "environment": {"gpu": gpu, "cpu_count": 2, "commit": commit},
            "settings": {"size": 224, "batch_size": 32, "dtype": "float32", "workers": 2, "threads": 2},
            "rows": [row(2, "vitdata-plain", 250.0), row(4, "torch-dataloader", rate4)],
            "skipped": [{"row": 3, "name": "dali", "reason": "nvidia.dali cannot be imported"}]}


@pytest.fixture
def results(tmp_path):
    res = tmp_path / "benchmarks" / "results"
    (res / "cpu").mkdir(parents=True)
    (res / "nvidia-h100-80gb-hbm3").mkdir()
    (res / "cpu" / "2026-01-01-loader.json").write_text(json.dumps(_loader_record(None, "a" * 40, "2026-01-01")))
    (res / "cpu" / "2026-02-01-loader.json").write_text(json.dumps(_loader_record(None, "b" * 40 + "-dirty",
                                                                                  "2026-02-01T10:00:00")))
    (res / "nvidia-h100-80gb-hbm3" / "2026-02-01-step.json").write_text(json.dumps({
        "format": "vitdata-bench/1", "what": "step", "date": "2026-02-01", "environment": {"gpu": "NVIDIA H100 80GB HBM3", "commit": "c" * 40},
        "settings": {"model": "vit_small_patch16_224", "size": 224, "batch_size": 256, "precision": "bf16 autocast"},
        "feeds": {"synthetic": {"step_s_median": 0.1, "data_wait_fraction": 0.0},
                  "vitdata": {"step_s_median": 0.101, "data_wait_fraction": 0.012}}, "skipped": []}))
    (res / "nvidia-h100-80gb-hbm3" / "2026-02-01-kernels.json").write_text(json.dumps({
        "format": "vitdata-bench/1", "what": "kernels", "date": "2026-02-01",
        "environment": {"gpu": "NVIDIA H100 80GB HBM3", "commit": "d" * 40},
        "settings": {"size": 224, "crop": 160, "batch": 256, "dtype": "bfloat16", "ratio": 0.25},
        "lowpass_crop": [{"name": "triton kernel", "gb_per_s": 1675.0, "gb_per_s_pct_of_peak": 50.0,
                          "speedup_vs_baseline": 6.0}], "patch_erase": []}))
    (res / "cpu" / "notes.json").write_text("[1, 2]")   # not a record: ignored
    return res


def test_table_names_device_and_commit_of_every_figure_newest_record_only(rt, results):
    table = rt.render(rt.newest(rt.load_records(str(results), str(results.parent.parent))))
    lines = [ln for ln in table.splitlines()[2:]]
    assert lines and all(ln.count("|") == 7 for ln in lines)
    assert "bbbbbbbbbb (dirty)" in table and "aaaaaaaaaa" not in table
    assert "CPU only (2 cores)" in table and "NVIDIA H100 80GB HBM3" in table
    assert "250 images/s" in table and "2.50x row (4)" in table
    assert "nvidia.dali cannot be imported" in table
    assert "data-wait 1.20% of 101.0 ms" in table and "`cccccccccc`" in table
    assert "1,675.0 GB/s (50% of peak)" in table and "`dddddddddd`" in table
    assert "(benchmarks/results/cpu/2026-02-01-loader.json)" in table
    gpu_first = table.index("NVIDIA H100") < table.index("CPU only")
    assert gpu_first


def test_write_replaces_only_between_the_markers(rt, results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{rt.START}\nold table\n{rt.END}\nafter\n")
    assert rt.main(["--results", str(results), "--readme", str(readme), "--write"]) == 0
    text = readme.read_text()
    assert text.startswith("# x\nbefore\n" + rt.START + "\n| device |")
    assert text.endswith(rt.END + "\nafter\n") and "old table" not in text
    assert rt.main(["--results", str(results), "--readme", str(readme), "--write"]) == 0
    assert readme.read_text() == text   # idempotent


def test_write_refuses_a_readme_without_markers(rt, results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert rt.main(["--results", str(results), "--readme", str(readme), "--write"]) == 2
    assert readme.read_text() == "# no markers\n"
    assert "markers" in capsys.readouterr().err


def test_no_records_renders_a_note_not_an_empty_table(rt, tmp_path):
    assert "No benchmark records" in rt.render(rt.load_records(str(tmp_path)))


def test_a_record_in_another_format_is_named_and_left_out(rt, results, capsys):
    old = {"benchmark": "kernels", "date": "2026-03-01", "env": {"gpu": None, "git_commit": "e" * 40},
           "settings": {}, "lowpass_crop": [], "patch_erase": []}
    (results / "cpu" / "2026-03-01-kernels.json").write_text(json.dumps(old))
    records = rt.load_records(str(results), str(results.parent.parent))
    assert "2026-03-01-kernels.json" not in " ".join(r["_path"] for r in records)
    assert "2026-03-01-kernels.json" in capsys.readouterr().err


def test_the_committed_records_are_all_in_the_one_format():
    from vitdata.bench.record import RECORD_FORMAT, load_records

    records = load_records(str(ROOT / "benchmarks" / "results"))   # raises on any other format
    assert records and all(r["format"] == RECORD_FORMAT for r in records)


def test_a_record_pinned_to_fewer_cores_says_how_many_it_had(rt):
    assert rt.device_name({"environment": {"cpu_count": 2, "cpus_usable": 1}}) == "CPU only (1 of 2 cores)"
    assert rt.device_name({"environment": {"cpu_count": 2, "cpus_usable": 2}}) == "CPU only (2 cores)"


def test_a_record_of_its_own_series_adds_to_the_newest_record_instead_of_replacing_it(rt, results):
    main = json.loads((results / "cpu" / "2026-02-01-loader.json").read_text())
    extra = dict(main, date="2026-03-01", settings=dict(main["settings"], series="batch 64"),
                 environment=dict(main["environment"], commit="e" * 40))
    (results / "cpu" / "2026-03-01-loader-batch64.json").write_text(json.dumps(extra))
    table = rt.render(rt.newest(rt.load_records(str(results), str(results.parent.parent))))
    assert "(benchmarks/results/cpu/2026-02-01-loader.json)" in table and "`eeeeeeeeee`" in table
    newer = dict(extra, date="2026-04-01", environment=dict(main["environment"], commit="f" * 40))
    (results / "cpu" / "2026-04-01-loader-batch64.json").write_text(json.dumps(newer))
    table = rt.render(rt.newest(rt.load_records(str(results), str(results.parent.parent))))
    assert "`ffffffffff`" in table and "`eeeeeeeeee`" not in table and "2026-02-01-loader.json" in table
