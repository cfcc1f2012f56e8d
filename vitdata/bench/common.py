"""What the loader and step benchmarks share: run settings, the cores they split, data long enough for the run.

Data smaller than the run (e.g. 403 photos at batch 256) is *cycled*: a temporary copy repeats every
sample K times (an ImageFolder as copies: the index reads each real file once, so links would collapse into
one sample; shards rewritten with prefixed keys, since keys must be unique), so every feed reads the same
bytes in long epochs and no feed pays for epoch restarts the others do not.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field

from vitdata.bench import record
from vitdata.loader.config import DTYPES  # noqa: F401 (the rows' --dtype choices)
from vitdata.loader.config import IMAGENET_MEAN, IMAGENET_STD, torch_dtype  # noqa: F401 (the rows' normalisation)


class RowSkipped(Exception):
    """A feed cannot run here; the message says why (it goes into the table and the record)."""


@dataclass
class Parallelism:
    """How a run divides the CPUs it may use (``os.sched_getaffinity``), so that no feed oversubscribes them.

    ``threads``: DALI CPU threads (decode's host part, CPU operators); ``source_workers``: vitdata's DALI
    source processes (read + header check); ``workers``: torch DataLoader workers of the feeds that have
    only those (decode and augment run there)."""
    threads: int
    source_workers: int
    workers: int

    @classmethod
    def resolve(cls, device: str, threads: int | None = None, source_workers: int | None = None,
                workers: int | None = None, cpus: int | None = None) -> "Parallelism":
        """Fill what is not given from ``cpus`` (default: the usable CPUs). With a GPU, DALI threads and source
        workers share the cores half and half (16 cores: 8 + 8); on CPU the source runs in the pipeline's
        thread (decoding, not reading, is the cost there) and DALI gets every core. DataLoader workers get
        every core: they are the only parallelism of the torch feeds."""
        cpus = cpus or record.usable_cpus()
        gpu = device.startswith("cuda")
        if source_workers is None:
            source_workers = cpus // 2 if gpu else 0
        if threads is None:
            threads = max(1, cpus - source_workers) if gpu else cpus
        return cls(threads=threads, source_workers=source_workers, workers=cpus if workers is None else workers)


@dataclass
class Settings:
    data: str                         # the data the user gave (ImageFolder root or shards)
    root: str                         # what the feeds read (``data``, or the cycled tree)
    kind: str                         # "imagefolder" | "wds"
    sources: list[str]                # files of ``root`` (wds: the shards)
    num_samples: int                  # samples in ``root``
    size: int = 224
    batch_size: int = 256
    dtype: str = "float32"
    device: str = "cpu"
    workers: int = 2                  # DataLoader workers (rows 4-5)
    threads: int = 2                  # DALI CPU threads
    source_workers: int = 0           # vitdata's DALI source processes (rows 1-2 with a GPU)
    warmup: int = 5
    windows: int = 5
    steps: int = 10
    seed: int = 0
    cycle: int = 1                    # times each file of ``data`` appears in ``root``
    patch_size: int = 16
    extra: dict = field(default_factory=dict)

    @property
    def gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def total_batches(self) -> int:
        return self.warmup + self.windows * self.steps

    def torch_dtype(self):
        return torch_dtype(self.dtype)

    def record(self) -> dict:
        return {"data": os.path.abspath(self.data), "data_kind": self.kind, "samples": self.num_samples // self.cycle,
                "cycled": self.cycle, "samples_per_epoch": self.num_samples, "size": self.size,
                "batch_size": self.batch_size, "dtype": self.dtype, "device": self.device, "workers": self.workers,
                "threads": self.threads, "source_workers": self.source_workers, "warmup_batches": self.warmup,
                "windows": self.windows, "steps_per_window": self.steps, "seed": self.seed,
                "patch_size": self.patch_size, **self.extra}


def cycled_tree(data: str, times: int, out: str) -> str:
    """A copy of ``data`` in which every file appears ``times`` times, each a real copy; returns its root."""
    from vitdata.data.index import open_index

    idx = open_index(data)
    if idx.kind == "imagefolder":
        root = os.path.join(out, "imagefolder")
        for i in range(len(idx)):
            rel = idx.key(i)
            d, name = os.path.split(rel)
            os.makedirs(os.path.join(root, d), exist_ok=True)
            for k in range(times):
                shutil.copyfile(idx.sources[int(idx.file_id[i])], os.path.join(root, d, f"c{k:04d}_{name}"))
        return root
    # Shard keys must be unique across shards, so the copies are rewritten with prefixed keys.
    import tarfile

    root = os.path.join(out, "shards")
    os.makedirs(root)
    for shard in idx.sources:
        base = os.path.basename(shard)[:-len(".tar")]
        with tarfile.open(shard) as src:
            members = [(m, src.extractfile(m).read()) for m in src.getmembers() if m.isfile()]
        for k in range(times):
            with tarfile.open(os.path.join(root, f"{base}-c{k:04d}.tar"), "w", format=tarfile.USTAR_FORMAT) as dst:
                for m, data in members:
                    info = tarfile.TarInfo(f"c{k:04d}_{os.path.basename(m.name)}")
                    info.size, info.mtime = len(data), 0
                    dst.addfile(info, io.BytesIO(data))
    classes = os.path.join(os.path.dirname(idx.sources[0]), "classes.json")
    if os.path.exists(classes):
        shutil.copy(classes, os.path.join(root, "classes.json"))
    return root


@contextlib.contextmanager
def prepared_data(data: str, needed_samples: int, *, cycle: int | None = None):
    """Yield (root, index, cycle): ``data`` itself when it holds ``needed_samples``, else a cycled tree
    (removed afterwards, with its index cache)."""
    from vitdata.data.index import open_index

    idx = open_index(data)
    times = cycle or max(1, math.ceil(needed_samples / len(idx)))
    if times == 1:
        yield data, idx, 1
        return
    with scratch_dir() as tmp:
        root = cycled_tree(data, times, tmp)
        yield root, open_index(root), times


@contextlib.contextmanager
def scratch_dir(prefix: str = "vitdata-bench-"):
    """Yield a temporary folder that is also ``$VITDATA_CACHE`` meanwhile, so the indexes a benchmark builds
    never land in the user's cache; both are removed afterwards."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    old_cache = os.environ.get("VITDATA_CACHE")
    os.environ["VITDATA_CACHE"] = os.path.join(tmp, "cache")
    try:
        yield tmp
    finally:
        if old_cache is None:
            os.environ.pop("VITDATA_CACHE", None)
        else:
            os.environ["VITDATA_CACHE"] = old_cache
        shutil.rmtree(tmp, ignore_errors=True)


def dali_importable() -> str | None:
    """None when DALI imports, else the reason."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising something else
        return f"nvidia.dali cannot be imported ({type(e).__name__}: {e})"
    return None


def loader_importable() -> str | None:
    try:
        from vitdata.loader.config import LoaderConfig  # noqa: F401
        from vitdata.loader.loader import create_loader
    except Exception as e:
        return f"vitdata.loader cannot be imported ({type(e).__name__}: {e})"
    return None


@contextlib.contextmanager
def quiet_dali():
    """Drop DALI's deprecation notices for its own aliases (its RandAugment suite uses them). DALI forces
    them through with ``simplefilter("default")``, so a filter cannot stop them; the display hook can."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DeprecationWarning) and str(message).startswith("WARNING: `nvidia.dali"):
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_avg() -> float | None:
    """1-minute load average (other processes competing for the cores skew CPU figures), or None."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def shared_data(name: str) -> str:
    """Default data of a benchmark: ``$VITDATA_SHARED_DATA/<name>``, else ``../shared/data/<name>`` beside the
    checkout vitdata is imported from."""
    base = os.environ.get("VITDATA_SHARED_DATA") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "..", "shared", "data")
    return os.path.normpath(os.path.join(base, name))
