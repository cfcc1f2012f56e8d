"""A run folder has one writer, and what goes wrong with it is one line naming the file and the cause: a
second run on the folder (naming the first's pid), a folder that cannot be written, a full disk while
checkpointing (the previous checkpoint intact), a checkpoint of another model, training files changed
since the checkpoint (with ``--fresh-loader`` to go on); ``checkpoint.find`` never prefers a stale manifest
and a reader never fails on a checkpoint replaced under it (docs/reliability.md J6-J9)."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vitdata import cli
from vitdata.data import selfid
from vitdata.errors import ConfigError
from vitdata.train import checkpoint
from vitdata.train.loop import main
from vitdata.train.runlock import RunLock


@pytest.fixture
def data(tmp_path, monkeypatch):
    """train/ (64 images, 4 classes, 16 px: 8 steps of 8 per epoch) and val/ (16 images)."""
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VITDATA_DEBUG", raising=False)
    selfid.write_imagefolder(str(tmp_path / "train"), 64, num_classes=4, size=16)
    selfid.write_imagefolder(str(tmp_path / "val"), 16, num_classes=4, size=16)
    return tmp_path


def args(root, run, *extra):
    return ["--train", str(root / "train"), "--val", str(root / "val"), "--batch-size", "8", "--image-size", "16",
            "--patch-size", "8", "--depth", "1", "--workers", "0", "--no-progress", "--no-report", "--epochs", "2",
            "--log-every", "1", "--out", str(run), *extra]


def one_error_line(capsys, code) -> str:
    assert code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vitdata train: ")]
    assert "Traceback" not in err and len(lines) >= 1, err
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# one writer per run folder (J6)


@pytest.mark.heavy
def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_first_runs_pid_and_a_killed_runs_lock_is_free(
        data, capsys):
    run = data / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-P", "-m", "vitdata", "train", *args(data, run, "--epochs", "50")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None and not (run / "log.jsonl").exists():
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read()[-2000:]
        config = (run / "config.json").read_bytes()
        line = one_error_line(capsys, cli.main(["train", *args(data, run, "--epochs", "1")]))
        assert line.startswith(f"vitdata train: error: ConfigError: [out] run folder {run} is in use by another "
                               f"vitdata train (pid {first.pid} on "), line
        assert (run / "config.json").read_bytes() == config   # the second run wrote nothing
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    time.sleep(1.0)   # its source-less loader has no workers; the kernel released the lock with the process
    RunLock(str(run)).acquire().release()


def test_the_lock_is_released_when_the_run_ends_and_a_second_lock_in_one_process_is_refused(tmp_path):
    first = RunLock(str(tmp_path / "run")).acquire()
    with pytest.raises(ConfigError, match=f"pid {os.getpid()} on "):
        RunLock(str(tmp_path / "run")).acquire()
    first.release()
    RunLock(str(tmp_path / "run")).acquire().release()
    assert json.loads((tmp_path / "run" / "run.lock").read_text())["pid"] == os.getpid()


def _read_only(monkeypatch, folder):
    """``folder`` refuses new files as a read-only mount does (the tests may run as root, whom chmod does not
    stop)."""
    real_open, real_makedirs = os.open, os.makedirs

    def ro_open(path, flags, *a, **k):
        if str(path).startswith(str(folder)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    def ro_makedirs(path, *a, **k):
        if str(path).startswith(str(folder)) and not os.path.isdir(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_makedirs(path, *a, **k)

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "makedirs", ro_makedirs)


def test_a_read_only_output_or_resume_folder_is_one_line_naming_the_folder(data, capsys, monkeypatch):
    ro = data / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    for argv in (args(data, ro), ["--resume", str(ro)]):
        line = one_error_line(capsys, cli.main(["train", *argv]))
        assert line == (f"vitdata train: error: OutputError: cannot write into the run folder {ro}: creating "
                        f"{ro / 'run.lock'} failed (EROFS: Read-only file system); choose a writable folder with --out")


# ---------------------------------------------------------------------------------------------------
# checkpoints: a full disk, a model that does not fit, find, readers (J7, J9)


@pytest.mark.heavy
def test_a_full_disk_while_checkpointing_is_one_line_and_the_previous_checkpoint_stays_whole(data):
    run = data / "run"
    assert main(args(data, run, "--max-steps", "2")) == 0
    part = run / "checkpoint" / "tensors-2.safetensors"
    limit = part.stat().st_size // 2   # every other file of the resumed run is far smaller
    code = ("import resource, signal, sys\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "from vitdata.cli import main\n"
            "sys.exit(main(['train', '--resume', sys.argv[1], '--max-steps', '4']))\n")
    p = subprocess.run([sys.executable, "-P", "-c", code, str(run)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    (line,) = [line for line in p.stderr.splitlines() if line.startswith("vitdata train: error:")]
    assert line == (f"vitdata train: error: OutputError: could not save the checkpoint of step 4 in {run / 'checkpoint'}: "
                    f"could not write {run / 'checkpoint' / 'tensors-4.safetensors'} (EFBIG): File too large "
                    f"(EFBIG; the previous checkpoint there is intact)")
    assert checkpoint.load(str(run / "checkpoint"))["step"] == 2
    assert sorted(n for n in os.listdir(run / "checkpoint") if not n.startswith("index-")) == \
        ["manifest.json", "state-2.json", "tensors-2.safetensors"]


@pytest.mark.heavy
def test_a_checkpoint_of_another_model_is_one_line_naming_the_options_that_differ(data, capsys):
    run = data / "run"
    assert main(args(data, run, "--max-steps", "2")) == 0
    line = one_error_line(capsys, cli.main(["train", "--resume", str(run), "--depth", "2", "--embed-dim", "96",
                                            "--num-heads", "3"]))
    assert line.startswith(f"vitdata train: error: ConfigError: [resume, depth, embed_dim, num_heads] checkpoint "
                           f"{run / 'checkpoint'} holds another model: depth 1 (this run: 2); embed_dim 0 (this run: "
                           f"96); num_heads 0 (this run: 3). Resume with the options it was saved with"), line
    # Other data with another number of classes: named as such.
    selfid.write_imagefolder(str(data / "train3"), 48, num_classes=3, size=16)
    selfid.write_imagefolder(str(data / "val3"), 12, num_classes=3, size=16)
    line = one_error_line(capsys, cli.main(["train", "--resume", str(run), "--train", str(data / "train3"),
                                            "--val", str(data / "val3")]))
    assert "holds another model: 4 classes (this run's data: 3)" in line, line


def test_find_prefers_the_run_folders_checkpoint_over_a_stale_manifest_beside_it_and_names_it(tmp_path, capsys):
    checkpoint.save(str(tmp_path), {"w": torch.zeros(1)}, 3)
    assert checkpoint.find(str(tmp_path)) == str(tmp_path)
    checkpoint.save(str(tmp_path / "checkpoint"), {"w": torch.ones(1)}, 7)
    assert checkpoint.find(str(tmp_path)) == str(tmp_path / "checkpoint")
    err = capsys.readouterr().err
    assert f"resuming {tmp_path / 'checkpoint'} (step 7), not {tmp_path / 'manifest.json'} (step 3)" in err


def test_a_second_save_of_one_step_never_overwrites_the_previous_checkpoints_parts(tmp_path, monkeypatch):
    d = str(tmp_path)
    checkpoint.save(d, {"v": torch.zeros(3)}, 5)
    real = checkpoint.atomic_write

    def manifest_fails(path, data):
        if path.endswith("manifest.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", manifest_fails)
    with pytest.raises(checkpoint.OutputError, match="the previous checkpoint there is intact"):
        checkpoint.save(d, {"v": torch.ones(3)}, 5)
    assert torch.equal(checkpoint.load(d)["v"], torch.zeros(3))
    monkeypatch.setattr(checkpoint, "atomic_write", real)
    checkpoint.save(d, {"v": torch.ones(3)}, 5)
    assert torch.equal(checkpoint.load(d)["v"], torch.ones(3))
    assert sorted(os.listdir(d)) == ["manifest.json", "state-5.1.json", "tensors-5.1.safetensors"]


def test_a_reader_of_a_checkpoint_replaced_while_it_reads_reads_the_new_one(tmp_path, monkeypatch):
    """A run saving its next step swaps the manifest in, then removes the old parts: a reader that read the
    old manifest finds its parts gone and reads again from the new one."""
    d = str(tmp_path)
    checkpoint.save(d, {"v": torch.zeros(2)}, 1)
    real_open = open
    replaced = []

    def open_racing_a_writer(path, *a, **k):
        if "tensors-1" in str(path) and not replaced:
            replaced.append(True)
            checkpoint.save(d, {"v": torch.ones(2)}, 2)   # the other run's save, between manifest and parts
        return real_open(path, *a, **k)

    monkeypatch.setattr(checkpoint, "open", open_racing_a_writer, raising=False)
    back = checkpoint.load(d)
    assert replaced and back is not None and torch.equal(back["v"], torch.ones(2))


# ---------------------------------------------------------------------------------------------------
# training files changed since the checkpoint (J8)


@pytest.mark.heavy
def test_a_resume_after_a_training_file_went_names_it_and_fresh_loader_goes_on_with_the_model(data, capsys):
    run = data / "run"
    assert main(args(data, run, "--max-steps", "3")) == 0
    gone = sorted((data / "train" / "class_00").iterdir())[0]
    gone.unlink()
    assert cli.main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error, hint = [line for line in err.splitlines() if line.startswith("vitdata train: ")][-2:]
    assert error.startswith(f"vitdata train: error: StateError: cannot resume {run / 'checkpoint'}: the training data "
                            f"changed since the checkpoint was saved: 1 files gone ({gone}); 64 samples then, 63 now"), \
        error
    assert hint.startswith("vitdata train: hint: resume with --fresh-loader to keep the model, optimiser"), hint
    saved = checkpoint.load(str(run / "checkpoint"))
    assert main(["--resume", str(run), "--fresh-loader", "--max-steps", "4"]) == 0
    resumed = checkpoint.load(str(run / "checkpoint"))
    # The optimiser went on from the checkpoint (AdamW's step count), at the next epoch's first step.
    steps = [s["step"] for s in resumed["optimizer"]["state"].values()]
    assert steps and all(int(s) == int(t["step"]) + 1 for s, t in zip(steps, saved["optimizer"]["state"].values()))
    log = [json.loads(line) for line in open(run / "log.jsonl") if '"kind": "step"' in line]
    assert [r["step"] for r in log] == [0, 1, 2, 3] and 1.0 < log[-1]["epoch"] <= 2.0
    assert resumed["step"] == 4 and resumed["loader"][0]["epoch"] == 1 and resumed["loader"][0]["position"] == 1
