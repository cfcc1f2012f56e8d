"""A bad file in the validation split costs ``vitdata train`` one skipped sample, counted in the log and
result.json, never the epoch: the checkpoint is saved before evaluating, evaluation goes on past bad files,
and ``--strict-eval`` ends the run on the first one with the epoch already saved, which a resume evaluates
(docs/reliability.md J4, J5)."""
import json

import pytest

from vitdata import DataError
from vitdata.data import selfid
from vitdata.train import checkpoint
from vitdata.train.loop import main

from . import decodefail


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """train/: 64 good 16 px images in 4 classes; val/: 24 good ones, one whose coded data fails in the
    decoder (headers pass every check) and one that is no image at all."""
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    selfid.write_imagefolder(str(tmp_path / "train"), 64, num_classes=4, size=16)
    selfid.write_imagefolder(str(tmp_path / "val"), 24, num_classes=4, size=16)
    bad = [tmp_path / "val" / "class_01" / "zz_decoder.png", tmp_path / "val" / "class_02" / "zz_text.jpg"]
    bad[0].write_bytes(decodefail.make("png_bad_zlib", 900, 1, size=16))
    bad[1].write_bytes(b"<html>not an image</html>\n" * 20)
    return tmp_path, sorted(str(p) for p in bad)


def args(root, run):
    return ["--train", str(root / "train"), "--val", str(root / "val"), "--batch-size", "8", "--image-size", "16",
            "--patch-size", "8", "--depth", "1", "--workers", "1", "--no-progress", "--no-report", "--epochs", "1",
            "--log-every", "1", "--out", str(run)]


def evals(run):
    return [json.loads(line) for line in open(run / "log.jsonl") if '"kind": "eval"' in line]


@pytest.mark.heavy
def test_bad_validation_files_are_counted_and_skipped_and_the_run_completes(dataset, capsys):
    root, bad = dataset
    run = root / "run"
    assert main(args(root, run)) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["val_count"] == 24 and result["val_skipped"] == 2
    assert sorted(b["path"] for b in result["val_bad_files"]) == bad
    reasons = {b["path"]: b["reason"] for b in result["val_bad_files"]}
    assert reasons == {bad[0]: "decode_error", bad[1]: "unsupported_format"}
    (ev,) = evals(run)
    assert ev["skipped"] == 2 and ev["count"] == 24
    out = capsys.readouterr().out
    assert "2 bad files skipped" in out and all(f"evaluation skipped {p}" in out for p in bad)


@pytest.mark.heavy
def test_strict_eval_ends_the_run_with_the_epoch_saved_and_the_resume_evaluates_first(dataset):
    root, bad = dataset
    run = root / "run"
    with pytest.raises(DataError) as e:
        main(args(root, run) + ["--strict-eval"])
    assert e.value.path in bad
    saved = checkpoint.load(str(run / "checkpoint"))
    assert saved["step"] == 64 // 8 and saved["epoch"] == 1 and saved["eval_pending"] is True
    assert main(["--resume", str(run), "--no-strict-eval"]) == 0
    (ev,) = evals(run)   # evaluated once, from the checkpoint, with no step trained again
    assert ev["epoch"] == 1 and ev["step"] == 8 and ev["skipped"] == 2 and ev["count"] == 24
    steps = [json.loads(line)["step"] for line in open(run / "log.jsonl") if '"kind": "step"' in line]
    assert steps == list(range(8))
