"""docs/reliability.md I8: several writers of one file at once. Before, a writer's clean-up removed
another writer's temp file (67 of 600 concurrent writes failed with ENOENT). Now no writer fails, the last
rename wins, every read sees one whole version, and no temp file is left."""
import hashlib
import os
import subprocess
import sys
import textwrap
import threading

from vitdata import io as vio

WRITES = 100


def _version(writer: int, k: int) -> bytes:
    body = f"{writer}:{k}:".encode() * (8192 + 97 * k)       # ~50-130 KB, a size per version
    return hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def _check(data: bytes) -> bool:
    digest, _, body = data.partition(b"\n")
    return hashlib.sha256(body).hexdigest().encode() == digest


class _Reader(threading.Thread):
    """Reads the target in a loop until stopped; counts reads and any that is not a whole version."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.stop, self.reads, self.bad = path, threading.Event(), 0, []

    def run(self):
        while not self.stop.is_set():
            with open(self.path, "rb") as f:
                data = f.read()
            self.reads += 1
            if not _check(data):
                self.bad.append(len(data))


def _temps(directory, name):
    return [n for n in os.listdir(directory) if n.startswith("." + name + ".") and n.endswith(".tmp")]


def test_threads_writing_one_file_at_once_all_succeed_and_readers_see_whole_versions(tmp_path):
    target = tmp_path / "index.npz"
    vio.atomic_write(target, _version(0, 0))
    reader = _Reader(target)
    reader.start()
    errors = []

    def writer(w):
        for k in range(WRITES):
            try:
                vio.atomic_write(target, _version(w, k))
            except Exception as e:      # noqa: BLE001 -- every failure is counted
                errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader.stop.set()
    reader.join()
    print(f"\nthreads: {6 * WRITES} writes, {len(errors)} failed; {reader.reads} reads, {len(reader.bad)} partial")
    assert errors == [] and reader.bad == [] and reader.reads > 0
    assert _check(target.read_bytes()) and _temps(tmp_path, "index.npz") == []


WRITER = textwrap.dedent("""
    import hashlib, sys
    from vitdata.io import atomic_write
    path, w, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    failed = 0
    for k in range(n):
        body = f"{w}:{k}:".encode() * (8192 + 97 * k)
        try:
            atomic_write(path, hashlib.sha256(body).hexdigest().encode() + b"\\n" + body)
        except OSError as e:
            failed += 1
            print(e, file=sys.stderr)
    print(failed)
""")


def test_processes_writing_one_file_at_once_all_succeed_and_the_last_rename_wins(tmp_path):
    target = tmp_path / "index.npz"
    vio.atomic_write(target, _version(0, 0))
    script = tmp_path / "w.py"
    script.write_text(WRITER)
    reader = _Reader(target)
    reader.start()
    procs = [subprocess.Popen([sys.executable, str(script), str(target), str(w), str(WRITES)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(1, 5)]
    outs = [p.communicate(timeout=300) for p in procs]
    reader.stop.set()
    reader.join()
    failed = sum(int(o.strip() or 1) for o, _ in outs)
    print(f"\nprocesses: {4 * WRITES} writes, {failed} failed; {reader.reads} reads, {len(reader.bad)} partial")
    assert failed == 0, [e[-500:] for _, e in outs if e]
    assert all(p.returncode == 0 for p in procs) and reader.bad == [] and reader.reads > 0
    data = target.read_bytes()
    assert _check(data) and data.split(b"\n", 1)[1].split(b":")[1] == str(WRITES - 1).encode()  # some writer's last
    assert _temps(tmp_path, "index.npz") == []


def test_a_temp_file_of_a_live_writer_is_left_alone_and_a_dead_ones_is_removed(tmp_path):
    import fcntl

    target = tmp_path / "f.bin"
    live = tmp_path / ".f.bin.live.tmp"
    dead = tmp_path / ".f.bin.dead.tmp"
    live.write_bytes(b"half")
    dead.write_bytes(b"half")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)        # a writer still at work holds its lock
    try:
        vio.atomic_write(target, b"whole")
        assert sorted(_temps(tmp_path, "f.bin")) == [".f.bin.live.tmp"]
    finally:
        os.close(fd)
    vio.atomic_write(target, b"whole again")
    assert _temps(tmp_path, "f.bin") == [] and target.read_bytes() == b"whole again"
