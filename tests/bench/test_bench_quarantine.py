"""The quarantine benchmark runs with tiny settings: it times the loader with and without its periodic DALI
checkpoint (``LoaderConfig.checkpoint_every``, no module global), the epoch with one decoder-failing file and
the epoch at a bad-file rate against the clean one, for each kind of bad file (refused from the JPEG headers,
by the PNG data check, or by the decoder); the run asserts each kind takes its own path (quarantined or not)."""
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
    rates = rec["bad_file_rates"]
    kinds = ("jpeg_header", "png_data", "png_decoder")
    assert rec["settings"]["bad_kinds"] == ",".join(kinds) and set(rates["kinds"]) == set(kinds)
    for kind in kinds:
        rate = rates["rates"][kind]["0.05"]
        assert rate["bad_files"] == 5 and rate["epoch_s"] > 0 and rate["clean_epoch_s"] > 0
        assert rate["ratio"] == rate["epoch_s"] / rate["clean_epoch_s"]
    assert sum(h["measured"].startswith("epoch with 5.0 % bad files") for h in rec["headline"]) == 3


def test_an_unknown_bad_kind_is_refused_before_anything_is_timed_with_the_known_ones_named(tmp_path):
    with pytest.raises(SystemExit, match="--bad-kinds: unknown jpeg_tail .*jpeg_header, png_data, png_decoder"):
        bench.main(["quarantine", "--samples", "16", "--size", "16", "--image-size", "16", "--batch-size", "8",
                    "--threads", "1", "--repeats", "1", "--trials", "1", "--rates", "0.05", "--rate-samples", "32",
                    "--rate-batch-size", "8", "--bad-kinds", "jpeg_tail", "--json", str(tmp_path / "q.json")])
