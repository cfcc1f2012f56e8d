"""The Python steps of ``benchmarks/gpu_suite.sh``: the environment check, the device check and the pack step.

    python benchmarks/gpu_suite.py env STATE [--dry-run]
    python benchmarks/gpu_suite.py device [--dry-run] [--start-timeout S]
    python benchmarks/gpu_suite.py pack WORK OUTDIR

``env`` prints what the host has (versions, pytest plugins, CUDA, nvidia-smi, /dev/shm) and writes STATE, a
file of shell assignments the suite sources to decide which steps can run (``DALI=0`` skips the steps that
need DALI). ``device`` builds a train loader with device "cuda" and checks that DALI runs on GPU 0 and the
batch arrives there; ``--dry-run`` runs the same body on the CPU. Both start the DALI source workers with
spawn, as a CUDA host does: a spawned worker imports this file as ``__mp_main__``, so everything that builds
a loader stays under the ``__main__`` guard. ``pack`` puts the suite's logs, records and summary into one
archive in OUTDIR (photos and scratch files stay out), for a transfer that returns few files.

Only the standard library is imported at the top: ``pack`` runs after every step and must start fast.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

# What a device transfer returns: at most 8 files and 64 MiB. The suite leaves 2 files in OUTDIR (the
# archive and a copy of summary.tsv) and keeps the archive well under the size.
TRANSFER_MAX_FILES = 8
TRANSFER_MAX_BYTES = 64 * 2**20
ARCHIVE = "gpu-suite.tar.gz"
ARCHIVE_MAX_BYTES = 48 * 2**20
LOG_TAIL_BYTES = 4 * 2**20        # a longer log keeps its last 4 MiB (where a failure is)
PACKED_DIRS = ("logs", "records")
PACKED_TOP = ("summary.tsv", "commands.txt", "env.txt")
PACKED_SUFFIXES = (".log", ".tsv", ".txt", ".json", ".jsonl", ".xml", ".png", ".md")

# DALI's parallel external source passes each worker's encoded batch through /dev/shm, and the DataLoader
# rows of the loader benchmark pass decoded batches there: at batch 256 and 224 px both need a few GiB.
# Container runtimes default to 64 MiB, where those workers die with a bus error.
SHM_NEEDED_BYTES = 2 * 2**30


# -------------------------------------------------------------------------------------------------------
# env
# -------------------------------------------------------------------------------------------------------
def _version(module: str) -> tuple[bool, str]:
    import importlib

    try:
        return True, str(getattr(importlib.import_module(module), "__version__", "?"))
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"; say why
        return False, f"NOT IMPORTABLE: {type(e).__name__}: {e}"


def _dist_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def shm_bytes(path: str = "/dev/shm") -> int | None:
    """Size of the shared-memory filesystem in bytes (None where there is none)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_frsize * st.f_blocks


def shm_verdict(size: int | None) -> tuple[bool, str]:
    """(big enough, one line saying so) for a /dev/shm of ``size`` bytes."""
    if size is None:
        return False, "/dev/shm: missing: DALI's parallel source and DataLoader workers need shared memory"
    line = f"/dev/shm: {size / 2**30:.2f} GiB"
    if size < SHM_NEEDED_BYTES:
        return False, (f"{line}: TOO SMALL, the loader benchmark at batch 256 needs about "
                       f"{SHM_NEEDED_BYTES / 2**30:.0f} GiB (DALI's parallel source and the DataLoader rows pass "
                       f"batches through it); expect bus errors in steps 5 and 6")
    return True, line + " (enough)"


def env_check(state: str, dry: bool) -> int:
    """Print the host's versions and write ``state`` (shell assignments). 0 when DALI imports and, for a
    real run, CUDA is there."""
    import platform

    print("python", platform.python_version(), sys.executable)
    found = {}
    for m in ("torch", "triton", "nvidia.dali"):      # imported: importable is what counts
        found[m], text = _version(m)
        print(f"{m:12} {text}")
    for d in ("timm", "numpy", "pytest"):              # installed versions only: importing timm takes seconds
        found[d] = _dist_version(d) is not None
        print(f"{d:12} {_dist_version(d) or 'NOT INSTALLED'}")
    plugins = {d: _dist_version(d) for d in ("pytest-xdist", "pytest-timeout", "pytest-reportlog", "psutil")}
    print("pytest plugins:", ", ".join(f"{d} {v or 'absent'}" for d, v in plugins.items()))
    cuda = False
    if found["torch"]:
        import torch

        cuda = torch.cuda.is_available()
        print("cuda", torch.version.cuda, "available", cuda, "devices", torch.cuda.device_count())
        if cuda:
            print("gpu", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
    cpus = len(os.sched_getaffinity(0))
    print("usable cpus", cpus)
    shm = shm_bytes()
    shm_ok, line = shm_verdict(shm)
    print(line)
    smi = shutil.which("nvidia-smi")
    try:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=10) if smi else None
        print(out.stdout.strip() or out.stderr.strip() if out else "nvidia-smi: not found")
    except subprocess.TimeoutExpired:
        print("nvidia-smi: no answer in 10 s")
    dali = found["nvidia.dali"]
    print("DALI importable" if dali else "DALI NOT importable: the suite skips the steps that need it")
    values = dict(DALI=int(dali), CUDA=int(cuda), XDIST=int(bool(plugins["pytest-xdist"])),
                  PYTEST_TIMEOUT=int(bool(plugins["pytest-timeout"])), PYTEST=int(found["pytest"]), CPUS=cpus,
                  SHM_MB=(shm or 0) // 2**20, SHM_OK=int(shm_ok))
    _write_atomic(state, "".join(f"{k}={v}\n" for k, v in values.items()))
    return 0 if dali and (cuda or dry) else 1


# -------------------------------------------------------------------------------------------------------
# device
# -------------------------------------------------------------------------------------------------------
def _spawned_children() -> list[int]:
    """Child processes of this one started by multiprocessing's spawn (their command line runs spawn_main)."""
    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    found.append(int(pid))
        except (OSError, IndexError, ValueError):
            continue
    return found


def device_check(dry: bool, start_timeout: float, workers: int = 2) -> int:
    """A train loader with device "cuda" (dry: "cpu") and ``workers`` DALI source workers started with
    spawn reads one epoch; DALI must run on GPU 0 (dry: on the CPU) and the batches arrive there."""
    from vitdata import LoaderConfig, create_loader
    from vitdata.data import selfid
    from vitdata.loader.config import OutputConfig

    device = "cpu" if dry else "cuda"
    want_id = None if dry else 0
    with tempfile.TemporaryDirectory(prefix="vitdata-devcheck-") as root:
        selfid.write_imagefolder(root, 64, num_classes=4, size=64)
        cfg = LoaderConfig(data=root, batch_size=8, image_size=64, backend="dali",
                           output=OutputConfig(device=device), num_workers=workers, start_method="spawn",
                           worker_start_timeout=start_timeout)
        t0 = time.perf_counter()
        loader = create_loader(cfg)
        try:
            print(f"backend {loader.backend_name}, output device {device!r}, dali_device_id "
                  f"{loader.dali_device_id!r}, {workers} source workers started with spawn")
            if loader.dali_device_id != want_id:
                print(f"FAILED: device {device!r} gave DALI device_id {loader.dali_device_id!r}, expected {want_id!r}")
                return 1
            loader.set_epoch(0)
            batches, spawned, where = 0, 0, None
            for batch in loader:
                batches += 1
                spawned = max(spawned, len(_spawned_children()))
                where = batch.images.device
                if where.type != device:
                    print(f"FAILED: a batch arrived on {where}, expected {device}")
                    return 1
        finally:
            loader.close()
    print(f"ok: {batches} batches on {where} in {time.perf_counter() - t0:.1f} s; "
          f"{spawned} spawned source workers seen")
    if batches != 8 or spawned < workers:
        print(f"FAILED: expected 8 batches from {workers} spawned workers")
        return 1
    return 0


# -------------------------------------------------------------------------------------------------------
# pack
# -------------------------------------------------------------------------------------------------------
def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.part"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def pack_members(work: str) -> list[tuple[str, str]]:
    """(path, name in the archive) of what the suite brings back: ``logs/``, ``records/`` and the top-level
    summary files, by suffix. Photos, scratch folders and anything else in ``work`` stay out."""
    members = [(os.path.join(work, n), n) for n in PACKED_TOP if os.path.isfile(os.path.join(work, n))]
    for d in PACKED_DIRS:
        for root, _, files in os.walk(os.path.join(work, d)):
            for f in sorted(files):
                if f.endswith(PACKED_SUFFIXES):
                    p = os.path.join(root, f)
                    members.append((p, os.path.relpath(p, work)))
    return members


def _payload(path: str, name: str) -> tuple[bytes, str | None]:
    """A member's bytes: a log past LOG_TAIL_BYTES keeps its tail (with a note saying so)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if name.endswith(".log") and size > LOG_TAIL_BYTES:
            f.seek(size - LOG_TAIL_BYTES)
            return f.read(), f"{name}: {size} bytes, kept the last {LOG_TAIL_BYTES}"
        return f.read(), None


def _add(tf: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(mtime)
    tf.addfile(info, io.BytesIO(data))


def pack(work: str, out: str, max_bytes: int = ARCHIVE_MAX_BYTES) -> str:
    """Write ``out/gpu-suite.tar.gz`` (replaced atomically) and ``out/summary.tsv``; return the archive's path.

    Files go in smallest first, so one large record cannot push out the logs; a file that would take the
    uncompressed total past ``max_bytes`` is left out, and MANIFEST.txt in the archive lists every file
    with its size and says what was cut or left out."""
    os.makedirs(out, exist_ok=True)
    members = sorted(pack_members(work), key=lambda m: os.path.getsize(m[0]))
    dest = os.path.join(out, ARCHIVE)
    tmp = dest + ".part"
    lines, notes, left = [], [], max_bytes
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tf:
        for path, name in members:
            data, note = _payload(path, name)
            lines.append(f"{name}\t{os.path.getsize(path)}")
            if len(data) > left:
                notes.append(f"{name}: {len(data)} bytes, left out (the archive keeps under {max_bytes} bytes)")
                continue
            _add(tf, name, data, os.path.getmtime(path))
            left -= len(data)
            if note:
                notes.append(note)
        _add(tf, "MANIFEST.txt", "\n".join(lines + [""] + notes).encode() + b"\n", time.time())
    os.replace(tmp, dest)
    summary = os.path.join(work, "summary.tsv")
    if os.path.isfile(summary):
        with open(summary) as f:
            _write_atomic(os.path.join(out, "summary.tsv"), f.read())
    return dest


# -------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_suite.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("env", help="print the host's versions, write the suite's state file")
    e.add_argument("state")
    e.add_argument("--dry-run", action="store_true", help="a CPU host is fine")
    d = sub.add_parser("device", help="DALI on GPU 0 for device 'cuda' (--dry-run: the CPU), spawn workers")
    d.add_argument("--dry-run", action="store_true")
    d.add_argument("--start-timeout", type=float, default=12.0, help="seconds for the source workers to start")
    k = sub.add_parser("pack", help="archive WORK's logs, records and summary into OUTDIR")
    k.add_argument("work")
    k.add_argument("out")
    a = p.parse_args(argv)
    if a.what == "env":
        return env_check(a.state, a.dry_run)
    if a.what == "device":
        return device_check(a.dry_run, a.start_timeout)
    print(pack(a.work, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
