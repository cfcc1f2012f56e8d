"""Data workers leave SIGTERM and SIGINT to a trainer that stops cleanly on them, and still end when the
signal is for them alone (docs/reliability.md J2)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from vitdata.data import selfid

# A child "trainer": a StopSignal installed, a loader with 2 workers, one batch, then the workers' pids.
# It waits for a word on stdin: "group" (a SIGTERM to its whole process group, as torchrun and SLURM send),
# then takes 4 more batches and reports.
TRAINER = textwrap.dedent("""
    import os, signal, sys, time, multiprocessing as mp
    from vitdata import LoaderConfig, create_loader
    from vitdata.train.stop import StopSignal
    backend, data = sys.argv[1], sys.argv[2]
    stop = StopSignal().install()
    loader = create_loader(LoaderConfig(data=data, batch_size=4, image_size=16, backend=backend, num_workers=2,
                                        num_threads=1))
    it = iter(loader)
    next(it)
    if backend == "dali":
        pool = loader._backend.pipe._py_pool.pool
        pids = [p.pid for p in pool._processes]
    else:
        pids = [p.pid for p in mp.active_children()]
    print("pids", *pids, flush=True)
    for line in sys.stdin:
        if line.strip() == "group":
            os.killpg(0, signal.SIGTERM)
            time.sleep(1.5)   # the workers' wait for the mark is 1 s: past it, a worker that would die has died
            got = [len(next(it).ids) for _ in range(4)]
            print("batches", *got, "stop", stop.signum, flush=True)
""")


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "d"
    selfid.write_imagefolder(str(root), 64, num_classes=4, size=16)
    return str(root)


def _start(tmp_path, backend, data):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-P", str(script), backend, data], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)   # its own process group, as torchrun gives each rank
    line = child.stdout.readline()
    assert line.startswith("pids"), line + child.stderr.read()[-3000:]
    return child, [int(p) for p in line.split()[1:]]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ask(child, word):
    child.stdin.write(word + "\n")
    child.stdin.flush()
    return child.stdout.readline().split()


@pytest.mark.heavy
@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_a_sigterm_to_the_trainers_process_group_leaves_its_workers_serving_batches(tmp_path, data, backend):
    child, pids = _start(tmp_path, backend, data)
    try:
        assert len(pids) == 2
        got = _ask(child, "group")
        assert got == ["batches", "4", "4", "4", "4", "stop", "15"], child.stderr.read()[-3000:] if not got else got
        assert all(_alive(p) for p in pids)
    finally:
        child.kill()
        child.wait(30)


@pytest.mark.heavy
@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_a_sigterm_for_a_worker_alone_still_ends_it_within_two_seconds(tmp_path, data, backend):
    """DALI's pool stops its workers with SIGTERM and then waits for them without a timeout: a worker
    must never ignore a SIGTERM its trainer did not receive."""
    child, pids = _start(tmp_path, backend, data)
    try:
        os.kill(pids[0], signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and _alive(pids[0]):
            time.sleep(0.05)
        assert not _alive(pids[0])
    finally:
        child.kill()
        child.wait(30)


def test_without_a_stopping_trainer_a_worker_keeps_the_default_signal_actions(monkeypatch):
    from vitdata.pipelines import worker_signals
    monkeypatch.delenv(worker_signals.STOP_MARK_ENV, raising=False)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    worker_signals.follow_trainer_signals()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_the_stop_mark_counts_the_trainers_sigterms(tmp_path):
    from vitdata.pipelines.worker_signals import trainer_sigterms
    mark = tmp_path / "mark"
    mark.write_bytes(bytes([signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGTERM]))
    assert trainer_sigterms(str(mark)) == 2
    assert trainer_sigterms(str(tmp_path / "none")) == 0
