"""The quarantine benchmark runs with tiny settings: it times the loader with and without its periodic DALI
checkpoint (``LoaderConfig.checkpoint_every``, no module global), the epoch with one decoder-failing file and
the epoch at a bad-file rate against the clean one."""
import pytest

from vitdata import bench
from vitdata.bench import record as benchutil


@pytest.mark.heavy
def test_quarantine_times_the_checkpoint_overhead_and_one_failing_step(tmp_path):
    path = tmp_path / "quarantine.json"
    assert bench.main(["quarantine", "--samples", "64", "--size", "32", "--image-size", "32", "--batch-size", "8",
                       "--threads", "1", "--repeats", "1", "--trials", "1", "--rates", "0.05",
                       "--rate-samples", "96", "--rate-batch-size", "8", "--json", str(path)]) == 0
    rec = benchutil.read_record(str(path))
    assert rec["what"] == "quarantine" and rec["settings"]["checkpoint_every"] == 8
    quiet = rec["no_failure"]
    assert quiet["steps"] == 8 and min(quiet["median_epoch_s"].values()) > 0 and quiet["checkpoint_s"] > 0
    assert set(rec["one_failure"]) == {"workers_0", "workers_2", "workers_0_no_randaug"}
    for r in rec["one_failure"].values():
        assert r["one_failure_epoch_s"] > 0 and r["clean_epoch_s"] > 0
    rate = rec["bad_file_rates"]["rates"]["0.05"]
    assert rate["bad_files"] == 5 and rate["epoch_s"] > 0 and rate["clean_epoch_s"] > 0
    assert rate["ratio"] == rate["epoch_s"] / rate["clean_epoch_s"]
