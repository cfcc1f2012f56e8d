"""docs/reliability.md group D (D1, D2, D6) for vitdata.io.atomic_write, which every saved file goes through
(index, epoch plans, checkpoints): kills mid-save, full disks, staging location."""
import errno
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

from vitdata import io as vio
from vitdata.data import selfid
from vitdata.data.index import SampleIndex, open_index

WRITER = textwrap.dedent("""
    import hashlib, os, sys
    from vitdata.io import atomic_write
    path, version = sys.argv[1], int(sys.argv[2])
    body = bytes([version % 251]) * (4 << 20)
    while True:  # keep saving until killed
        atomic_write(path, hashlib.sha256(body).hexdigest().encode() + b"\\n" + body)
        version += 1
        body = bytes([version % 251]) * (4 << 20)
""")


def _complete(path) -> bool:
    data = open(path, "rb").read()
    digest, _, body = data.partition(b"\n")
    return hashlib.sha256(body).hexdigest().encode() == digest


@pytest.mark.heavy
def test_fifty_kills_during_saves_leave_a_complete_old_or_new_file(tmp_path):
    target = tmp_path / "state.bin"
    vio.atomic_write(target, hashlib.sha256(b"v0").hexdigest().encode() + b"\nv0")
    rng = np.random.default_rng(0)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for k in range(50):
        child = subprocess.Popen([sys.executable, str(script), str(target), str(k)])
        time.sleep(float(rng.uniform(0.05, 0.25)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert _complete(target), f"partial file after kill {k}"
    vio.atomic_write(target, b"x")  # the next successful save removes crash litter
    assert sorted(os.listdir(tmp_path)) == ["state.bin", "writer.py"]


def test_a_full_disk_names_path_and_errno_and_keeps_the_previous_file(tmp_path):
    target = tmp_path / "index.npz"
    vio.atomic_write(target, b"previous")
    before = hashlib.sha256(target.read_bytes()).hexdigest()
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "import signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "from vitdata.io import atomic_write\n"
            "try:\n    atomic_write(sys.argv[1], b'y' * 100000)\n"
            "except OSError as e:\n    print(e.errno, e); sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert out.stdout.startswith(str(errno.EFBIG)) and str(target) in out.stdout and "EFBIG" in out.stdout
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before
    assert os.listdir(tmp_path) == ["index.npz"]


def test_injected_enospc_leaves_the_previous_index_intact(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    selfid.write_shards(str(tmp_path / "s"), 20, size=16, per_shard=10)
    first = open_index(str(tmp_path / "s"))
    (cached,) = (tmp_path / "cache" / "index").glob("*.npz")
    before = hashlib.sha256(cached.read_bytes()).hexdigest()
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        first.save(str(cached))
    assert e.value.errno == errno.ENOSPC and str(cached) in str(e.value) and "ENOSPC" in str(e.value)
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == before
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]
    # a rebuild whose cache write fails still returns a usable index and says why
    time.sleep(0.01)
    selfid.write_shards(str(tmp_path / "s"), 30, size=16, per_shard=10)
    assert len(open_index(str(tmp_path / "s"))) == 30
    assert "could not cache" in capsys.readouterr().err
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert SampleIndex.load(str(cached)).fingerprint == first.fingerprint


def test_temporary_files_are_staged_in_the_target_directory_never_in_tmpdir(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    seen = []
    real = os.open

    def spy(path, *a, **kw):   # every file the write creates
        if a and a[0] & os.O_CREAT:
            seen.append(os.path.dirname(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "open", spy)
    target = tmp_path / "out" / "plan.npz"
    vio.atomic_write(target, lambda f: np.savez(f, a=np.arange(3)))
    assert seen == [str(target.parent)] and list(tmpdir.iterdir()) == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_users_umask_and_a_replaced_one_keeps_its_mode(tmp_path, monkeypatch, umask, mode):
    """Every saved file (index, plans, checkpoints) is created as ``open(path, "w")`` would create it."""
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    old = os.umask(umask)
    try:
        vio.atomic_write(tmp_path / "new.json", b"{}")
        assert os.stat(tmp_path / "new.json").st_mode & 0o777 == mode
        selfid.write_imagefolder(str(tmp_path / "data"), 4, num_classes=2, size=16)
        open_index(str(tmp_path / "data"), verbose=False)
        cached = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "cache") for f in fs]
        assert cached and all(os.stat(p).st_mode & 0o777 == mode for p in cached)
        os.chmod(tmp_path / "new.json", 0o640)
        vio.atomic_write(tmp_path / "new.json", b"[]")
        assert os.stat(tmp_path / "new.json").st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
