"""A training run ended by SIGTERM (a scheduler's or torchrun's preemption) or Ctrl-C saves at the next step
boundary and exits 128 + the signal's number with one line naming the folder to resume; the resumed run
equals the uninterrupted one; a second signal ends it at once; under torchrun every rank stops at the same
step (docs/reliability.md J1-J3)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vitdata.train.loop import main

# 600 synthetic images (540 train / 60 val), 32 px, patch 8, one block: 16 steps per epoch.
TINY = ["--synthetic-samples", "600", "--batch-size", "32", "--depth", "1", "--image-size", "32", "--patch-size", "8",
        "--workers", "1", "--no-progress", "--log-every", "1", "--no-report"]
STEPS = 2 * (540 // 32)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("VITDATA_CACHE", str(d))
    return d


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in open(run / "log.jsonl")]


def steps_logged(run: Path) -> int:
    try:
        return sum(1 for line in open(run / "log.jsonl") if '"kind": "step"' in line)
    except OSError:
        return 0


def start(args, cwd):
    """``vitdata train ARGS`` in its own process group (as torchrun starts each rank)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-P", "-m", "vitdata", "train", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(predicate, child, seconds=240.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and child.poll() is None and not predicate():
        time.sleep(0.02)
    assert child.poll() is None, "the run ended before the signal: " + child.stderr.read()[-3000:]


def one_thread(fn):
    """All runs compared use one intra-op thread: float reductions split over 1 or 2 threads round
    differently, and the losses would drift apart by the chaos of training, not by a resume bug."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.heavy
def test_sigterm_to_the_process_group_saves_at_the_step_boundary_and_the_resume_matches_the_uninterrupted_run(
        cache, tmp_path):
    """docs/reliability.md J1, J2: the group signal reaches the DALI source worker too, and it must live
    until the step in flight is delivered."""
    full, part = tmp_path / "full", tmp_path / "part"
    args = TINY + ["--epochs", "2", "--oracle", "weighted"]  # default --ckpt-every 0: no checkpoint until the signal
    one_thread(lambda: main(args + ["--out", str(full)]))
    child = start(args + ["--out", str(part)], tmp_path)
    try:
        wait_for(lambda: steps_logged(part) >= 5, child)
        os.killpg(child.pid, signal.SIGTERM)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 128 + signal.SIGTERM, err[-3000:]
    saved = json.loads((part / "checkpoint" / "manifest.json").read_text())["step"]
    assert saved == steps_logged(part) and 5 <= saved < 540 // 32   # the step boundary after the signal, mid-epoch
    lines = [line for line in (out + err).splitlines() if "resume with" in line]
    assert lines == [f"vitdata train: stopped by SIGTERM at step {saved} with a checkpoint in "
                     f"{part / 'checkpoint'}; resume with: vitdata train --resume {part}"]
    assert "Traceback" not in err and json.loads((part / "result.json").read_text())["stopped_by"] == "SIGTERM"
    assert one_thread(lambda: main(args + ["--resume", str(part)])) == 0
    a = {r["step"]: r["loss"] for r in read_log(full) if r["kind"] == "step"}
    b = {r["step"]: r["loss"] for r in read_log(part) if r["kind"] == "step"}
    assert sorted(a) == sorted(b) == list(range(STEPS))
    off = [(s, a[s], b[s]) for s in a if a[s] != pytest.approx(b[s], rel=1e-5, abs=1e-6)]
    assert not off, f"stopped at step {saved}; steps past tolerance (step, uninterrupted, resumed): {off}"
    assert [r["top1"] for r in read_log(full) if r["kind"] == "eval"] == \
           [r["top1"] for r in read_log(part) if r["kind"] == "eval"]


@pytest.mark.heavy
def test_ctrl_c_stops_with_a_checkpoint_and_a_second_ctrl_c_ends_the_run_at_once(cache, tmp_path):
    """docs/reliability.md J1: Ctrl-C (SIGINT to the terminal's process group) is a stop request like
    SIGTERM (exit status 130); a second one while the run is still going ends it at once, by the signal."""
    run = tmp_path / "run"
    child = start(TINY + ["--epochs", "2", "--out", str(run)], tmp_path)
    try:
        wait_for(lambda: steps_logged(run) >= 3, child)
        os.killpg(child.pid, signal.SIGINT)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 130, err[-3000:]
    assert json.loads((run / "checkpoint" / "manifest.json").read_text())["step"] == steps_logged(run)

    # The second signal, sent as soon as the first one is acknowledged (the run is still finishing its step,
    # saving and closing), ends the process by the signal, without the checkpoint.
    slow = tmp_path / "slow"
    child = start(TINY + ["--epochs", "2", "--out", str(slow)], tmp_path)
    try:
        wait_for(lambda: steps_logged(slow) >= 2, child)
        os.killpg(child.pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        seen = ""
        while time.monotonic() < deadline and "SIGINT received" not in seen:
            seen += child.stderr.readline()
        os.killpg(child.pid, signal.SIGINT)
        child.wait(60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == -signal.SIGINT, seen
    assert not (slow / "checkpoint" / "manifest.json").exists()
    time.sleep(1.5)   # the source worker ignores SIGINT and follows its parent (watched every 0.5 s)
    assert not _processes_in_group(child.pid)


def _proc_stat() -> list[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of every process that can be read."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    out.append((int(entry), f.read().rsplit(")", 1)[1].split()))
            except OSError:
                continue
    return out


def _processes_in_group(pgid: int) -> list[int]:
    return [pid for pid, fields in _proc_stat() if int(fields[2]) == pgid and fields[0] != "Z"]


def _children(pid: int) -> list[int]:
    return sorted(p for p, fields in _proc_stat() if int(fields[1]) == pid)


@pytest.mark.heavy
def test_under_torchrun_a_sigterm_to_one_rank_stops_every_rank_at_the_same_step(cache, tmp_path):
    """docs/reliability.md J3: the stop flag is agreed at every step boundary (a gloo all_reduce), so a
    signal that reaches one rank only stops both at one step; rank 0 saves and the resumed run completes
    with every step once."""
    run = tmp_path / "ddp"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-P", "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
           "-m", "vitdata", "train", *TINY, "--epochs", "2", "--batch-size", "16", "--out", str(run)]
    child = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        wait_for(lambda: steps_logged(run) >= 4, child)
        ranks = _children(child.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGTERM)   # one rank only
        out, err = child.communicate(timeout=180)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    saved = json.loads((run / "checkpoint" / "manifest.json").read_text())["step"]
    assert saved == steps_logged(run) and 4 <= saved < STEPS, err[-3000:]
    assert f"stopped by SIGTERM at step {saved}" in out, out[-2000:]
    result = json.loads((run / "result.json").read_text())
    assert result["stopped_by"] == "SIGTERM" and result["step"] == saved
    p = subprocess.run(cmd[:-2] + ["--resume", str(run)], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert [r["step"] for r in read_log(run) if r["kind"] == "step"] == list(range(STEPS))
