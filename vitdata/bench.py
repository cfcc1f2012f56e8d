"""``vitdata bench``: data throughput against the loaders users would otherwise run, on their own data.

Three subcommands, each answering one question:

- ``loader``: images/s of six ways to feed (B, 3, S, S) batches of the same data, size, dtype and device,
  measured in one process (rows below), with each figure's ratio to the torch DataLoader (row 4);
- ``kernels``: GB/s of the curriculum kernels against their baselines (helper benchmark in
  ``benchmarks/bench_kernels.py``) and the percentage of the GPU's memory bandwidth;
- ``step``: a timm ViT training step fed by the vitdata loader vs by a synthetic batch: the fraction of
  step time spent waiting for data.

Loader rows (``ROWS``):

====  ====================  =====================================================================
row   name                  what it runs
====  ====================  =====================================================================
1     vitdata-curriculum    ``create_loader``: RRC, RandAugment (n=2, m=9), flip, normalise, Fourier
                            crop (DALI resizes to S*8/7 rounded to the patch size, the crop takes it
                            to S), PatchErasing (ratio 0.25), sampling from a ``weighted`` oracle plan
2     vitdata-plain         ``create_loader``: RRC, flip, normalise
3     dali                  a plain DALI pipeline written the usual way: file / webdataset reader,
                            ``decoders.image_random_crop`` (mixed on GPU), resize, crop_mirror_normalize
4     torch-dataloader      ``torch.utils.data.DataLoader``, N workers, Pillow decode, torchvision
                            transforms v2 (RRC, flip, to float, normalise); the baseline of the ratios
5     timm                  ``timm.data.create_loader`` (RRC, flip, normalise; colour jitter off so it
                            does the same work), with its prefetcher on GPU; on CPU the prefetcher
                            is off (``use_prefetcher=False``) and the workers normalise
6     synthetic             one batch made in advance on the device, handed over each step: the
                            consumer's own cost, the ceiling
====  ====================  =====================================================================

Timing: ``warmup`` batches, then ``windows`` timed windows of ``steps`` batches; each window ends in a
device sync, so queued GPU work is inside the window it belongs to. A row's figure is the median of
its windows' images/s; the spread is (max - min) / median over the windows.

Data smaller than the run (e.g. 403 photos at batch 256) is *cycled*: a temporary copy repeats every
sample K times (an ImageFolder as hard links, or symbolic links across file systems; shards rewritten
with prefixed keys, since keys must be unique), so every row reads the same bytes in long epochs and no
row pays for epoch restarts the others do not.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import glob
import io
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from vitdata import benchutil

ROWS = {
    1: ("vitdata-curriculum", "vitdata, full curriculum (RandAugment, Fourier crop, PatchErasing, oracle sampling)"),
    2: ("vitdata-plain", "vitdata, plain (random-resized crop, flip, normalise)"),
    3: ("dali", "plain DALI pipeline (reader, decode+RRC, resize, crop_mirror_normalize)"),
    4: ("torch-dataloader", "torch DataLoader + torchvision transforms v2, N workers"),
    5: ("timm", "timm create_loader"),
    6: ("synthetic", "synthetic in-memory batch (the consumer's own cost)"),
}
BASELINE_ROW = 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = ("float32", "bfloat16", "float16")

# Peak memory bandwidth (GB/s, 1e9 bytes/s) by GPU name; the first key found in the name wins.
PEAK_BANDWIDTH_GBS = (
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),            # SXM5
    ("GH200", 4000.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-PCIE-40GB", 1555.0),
    ("A100-SXM4-40GB", 1555.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("V100", 900.0),
    ("T4", 320.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
)


def peak_bandwidth_gbs(gpu_name: str | None) -> float | None:
    """Peak memory bandwidth of ``gpu_name`` in GB/s, or None when the GPU is not in the table."""
    if not gpu_name:
        return None
    name = gpu_name.upper()
    for key, gbs in PEAK_BANDWIDTH_GBS:
        if key.upper() in name:
            return gbs
    return None


def percent_of_peak(gbs: float, gpu_name: str | None) -> float | None:
    peak = peak_bandwidth_gbs(gpu_name)
    return None if peak is None else 100.0 * gbs / peak


class RowSkipped(Exception):
    """A row cannot run here; the message says why (it goes into the table and the JSON)."""


# --------------------------------------------------------------------------------------------------
# Settings shared by the rows
# --------------------------------------------------------------------------------------------------

@dataclass
class Settings:
    data: str                         # the data the user gave (ImageFolder root or shards)
    root: str                         # what the rows read (``data``, or the cycled tree)
    kind: str                         # "imagefolder" | "wds"
    sources: list[str]                # files of ``root`` (wds: the shards)
    num_samples: int                  # samples in ``root``
    size: int = 224
    batch_size: int = 256
    dtype: str = "float32"
    device: str = "cpu"
    workers: int = 2
    threads: int = 2
    warmup: int = 5
    windows: int = 5
    steps: int = 10
    seed: int = 0
    cycle: int = 1                    # times each file of ``data`` appears in ``root``
    patch_size: int = 16
    extra: dict = field(default_factory=dict)

    @property
    def total_batches(self) -> int:
        return self.warmup + self.windows * self.steps

    def torch_dtype(self):
        import torch

        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]

    def record(self) -> dict:
        return {"data": os.path.abspath(self.data), "data_kind": self.kind, "samples": self.num_samples // self.cycle,
                "cycled": self.cycle, "samples_per_epoch": self.num_samples, "size": self.size,
                "batch_size": self.batch_size, "dtype": self.dtype, "device": self.device, "workers": self.workers,
                "threads": self.threads, "warmup_batches": self.warmup, "windows": self.windows,
                "steps_per_window": self.steps, "seed": self.seed, "patch_size": self.patch_size, **self.extra}


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        os.symlink(os.path.abspath(src), dst)


def cycled_tree(data: str, times: int, out: str) -> str:
    """A copy of ``data`` in which every file appears ``times`` times, made of links; returns its root."""
    from vitdata.index import open_index

    idx = open_index(data)
    if idx.kind == "imagefolder":
        root = os.path.join(out, "imagefolder")
        for i in range(len(idx)):
            rel = idx.key(i)
            d, name = os.path.split(rel)
            os.makedirs(os.path.join(root, d), exist_ok=True)
            for k in range(times):
                _link(idx.sources[int(idx.file_id[i])], os.path.join(root, d, f"c{k:04d}_{name}"))
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
    from vitdata.index import open_index

    idx = open_index(data)
    times = cycle or max(1, math.ceil(needed_samples / len(idx)))
    if times == 1:
        yield data, idx, 1
        return
    tmp = tempfile.mkdtemp(prefix="vitdata-bench-")
    old_cache = os.environ.get("VITDATA_CACHE")
    os.environ["VITDATA_CACHE"] = os.path.join(tmp, "cache")
    try:
        root = cycled_tree(data, times, tmp)
        yield root, open_index(root), times
    finally:
        if old_cache is None:
            os.environ.pop("VITDATA_CACHE", None)
        else:
            os.environ["VITDATA_CACHE"] = old_cache
        shutil.rmtree(tmp, ignore_errors=True)


def _dali_importable() -> str | None:
    """None when DALI imports, else the reason."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising something else
        return f"nvidia.dali cannot be imported ({type(e).__name__}: {e})"
    return None


def _loader_importable() -> str | None:
    try:
        from vitdata.loader import LoaderConfig, create_loader  # noqa: F401
    except Exception as e:
        return f"vitdata.loader cannot be imported ({type(e).__name__}: {e})"
    return None


# --------------------------------------------------------------------------------------------------
# The rows: each returns (iterator of (images, labels), close, details)
# --------------------------------------------------------------------------------------------------

Feed = tuple[Iterator, Callable[[], None], dict]


def _on_device(images, labels, s: Settings):
    import torch

    dev = torch.device(s.device)
    if images.device != dev:
        images = images.to(dev, non_blocking=True)
    if images.dtype != s.torch_dtype():
        images = images.to(s.torch_dtype())
    return images, labels.to(dev, non_blocking=True)


def vitdata_workers(s: Settings) -> tuple[int, int]:
    """(source workers, DALI threads) of rows 1 and 2. With a GPU: ``s.workers`` source processes and
    ``s.threads`` threads. On a CPU-only run the source runs in the pipeline's thread instead
    (``num_workers=0``: decoding, not reading, is the cost there, and worker processes only add copies),
    and that thread's reading takes the place of the worker processes, so DALI gets one thread more than
    ``s.threads`` (measured on 2 cores: 2 threads + 2 workers 668-679 img/s plain, 0 workers + 3 threads
    731-745)."""
    return (0, s.threads + 1) if s.device == "cpu" else (s.workers, s.threads)


def vitdata_config(s: Settings, curriculum: bool):
    """LoaderConfig of row 1 (``curriculum``) or row 2; the output is (B, 3, size, size) either way."""
    from vitdata.loader import AugmentConfig, LoaderConfig, OutputConfig, ScheduleConfig

    out = OutputConfig(dtype=s.dtype, device=s.device)
    workers, threads = vitdata_workers(s)
    common = dict(data=s.root, batch_size=s.batch_size, output=out, num_workers=workers, num_threads=threads,
                  seed=s.seed)
    if not curriculum:
        return LoaderConfig(image_size=s.size, augment=AugmentConfig(randaug=False, patch_size=s.patch_size),
                            **common)
    # The Fourier crop shrinks its input; DALI resizes to ~8/7 of the size (256 for 224) so that the
    # crop lands on the same output size as every other row.
    dali_size = int(math.ceil(s.size * 8 / 7 / s.patch_size) * s.patch_size)
    return LoaderConfig(image_size=dali_size,
                        augment=AugmentConfig(randaug=True, randaug_magnitude=9.0, randaug_num_ops=2,
                                              patch_size=s.patch_size),
                        schedule=ScheduleConfig(name="constant", epochs=4,
                                                kwargs={"lowpass_size": s.size, "erase_ratio": 0.25}),
                        **common)


def _primed_oracle(num_samples: int, device: str, seed: int):
    """A ``weighted`` oracle that has seen one epoch of per-sample losses (drawn, not trained), so the
    plan it hands the sampler is skewed the way a real run's is."""
    import torch

    from vitdata.oracle import DifficultyOracle

    oracle = DifficultyOracle(num_samples, policy="weighted", device=device, seed=seed, floor=0.5)
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(num_samples)
    losses = torch.empty(num_samples).exponential_(1.0, generator=g)
    for chunk in range(0, num_samples, 4096):
        oracle.report(ids[chunk:chunk + 4096].to(device), losses[chunk:chunk + 4096].to(device))
    return oracle


def row_vitdata(s: Settings, curriculum: bool) -> Feed:
    why = _loader_importable()
    if why:
        raise RowSkipped(why)
    import torch

    from vitdata.loader import create_loader

    cfg = vitdata_config(s, curriculum)
    oracle = _primed_oracle(s.num_samples, s.device, s.seed) if curriculum else None
    loader = create_loader(cfg, split="train", oracle=oracle)
    # Curriculum: epoch 1 samples from the oracle's plan for it (end_epoch(0) of the primed losses).
    loader.set_epoch(1 if curriculum else 0)
    steps = len(loader)
    if steps < s.total_batches:
        loader.close()
        raise RowSkipped(f"epoch has {steps} steps, fewer than the {s.total_batches} the run needs")
    fake_loss = torch.rand(s.batch_size, device=s.device)
    delivered = []

    def gen():
        for batch in loader:
            if curriculum:
                delivered.append(batch.ids)
                loader.report(batch.ids, fake_loss[:batch.ids.shape[0]])
            yield batch.images, batch.labels

    details = {"backend": loader.backend_name, "config": _config_dict(cfg), "steps_per_epoch": steps}
    if curriculum:
        details.update(oracle_policy="weighted", oracle_floor=0.5, epoch=1, fourier_crop=f"{cfg.image_size}->{s.size}",
                       erase_ratio=0.25, randaug="n=2 m=9")
        details["_delivered_ids"] = delivered
        details["_loader"] = loader
    return gen(), loader.close, details


def _config_dict(cfg) -> dict:
    import dataclasses

    d = dataclasses.asdict(cfg)
    d.get("schedule", {}).pop("schedule", None)
    return json.loads(json.dumps(d, default=str))


@contextlib.contextmanager
def _quiet_dali():
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


def _dali_plain_pipeline(s: Settings):
    from nvidia.dali import fn, pipeline_def, types

    gpu = s.device.startswith("cuda")

    @pipeline_def(batch_size=s.batch_size, num_threads=s.threads, device_id=0 if gpu else None, seed=s.seed + 3,
                  prefetch_queue_depth=2)
    def plain():
        if s.kind == "imagefolder":
            jpegs, labels = fn.readers.file(file_root=s.root, random_shuffle=True, name="Reader")
        else:
            jpegs, labels = fn.readers.webdataset(paths=s.sources, ext=["jpg;jpeg;png", "cls"], random_shuffle=True,
                                                  name="Reader")
        images = fn.decoders.image_random_crop(jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                               random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3],
                                               num_attempts=10)
        images = fn.resize(images, resize_x=s.size, resize_y=s.size, antialias=True)
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT16 if s.dtype == "float16" else types.FLOAT,
                                          output_layout="CHW", mean=[255 * m for m in IMAGENET_MEAN],
                                          std=[255 * v for v in IMAGENET_STD],
                                          mirror=fn.random.coin_flip(probability=0.5))
        return images, labels

    return plain()


def _dali_to_torch(tl, s: Settings, dtype):
    """Copy a dense DALI TensorList into a new torch tensor on the row's device (CPU or the current stream)."""
    import torch
    from nvidia.dali.plugin.pytorch import feed_ndarray

    t = tl.as_tensor()
    gpu = s.device.startswith("cuda")
    out = torch.empty(t.shape(), dtype=dtype, device=s.device if gpu else "cpu")
    feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream() if gpu else None)
    return out


def row_dali(s: Settings) -> Feed:
    why = _dali_importable()
    if why:
        raise RowSkipped(why)
    import torch

    with _quiet_dali():
        pipe = _dali_plain_pipeline(s)
        pipe.build()
    out_dtype = torch.float16 if s.dtype == "float16" else torch.float32

    def labels_of(tl) -> torch.Tensor:
        if s.kind == "imagefolder":
            return torch.from_numpy(np.array(tl.as_tensor()).reshape(-1).astype(np.int64))
        # webdataset ".cls" members arrive as their ASCII bytes
        return torch.tensor([int(bytes(np.array(tl.at(i))).decode()) for i in range(len(tl))], dtype=torch.int64)

    def gen():
        while True:
            images, labels = pipe.run()
            yield _on_device(_dali_to_torch(images, s, out_dtype), labels_of(labels), s)

    def close():
        nonlocal pipe
        del pipe

    return gen(), close, {"reader": "file" if s.kind == "imagefolder" else "webdataset",
                          "decoder": "mixed" if s.device.startswith("cuda") else "cpu"}


class TarDataset:
    """Samples of WebDataset shards read through ``vitdata.index.SampleReader``, decoded with Pillow.
    ``transform`` is public so timm's ``create_loader`` can set it."""

    def __init__(self, source: str, transform=None):
        from vitdata.index import SampleReader, open_index

        self.index = open_index(source)
        self.reader = SampleReader(self.index)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.open(io.BytesIO(self.reader.read(i))).convert("RGB")
        return (self.transform(img) if self.transform else img), int(self.index.label[i])


def row_torch(s: Settings) -> Feed:
    import torch
    from torchvision.transforms import v2

    tf = v2.Compose([v2.RandomResizedCrop(s.size, antialias=True), v2.RandomHorizontalFlip(), v2.ToImage(),
                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    if s.kind == "imagefolder":
        from torchvision.datasets import ImageFolder

        ds = ImageFolder(s.root, transform=tf)
    else:
        ds = TarDataset(s.root, transform=tf)
    gpu = s.device.startswith("cuda")
    dl = torch.utils.data.DataLoader(ds, batch_size=s.batch_size, shuffle=True, drop_last=True,
                                     num_workers=s.workers, pin_memory=gpu, persistent_workers=s.workers > 0,
                                     generator=torch.Generator().manual_seed(s.seed))
    it = iter(dl)

    def gen():
        for images, labels in it:
            yield _on_device(images.as_subclass(torch.Tensor), labels, s)

    def close():
        nonlocal it
        if hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        del it

    return gen(), close, {"dataset": type(ds).__name__, "decode": "Pillow", "pin_memory": gpu,
                          "steps_per_epoch": len(dl)}


def row_timm(s: Settings) -> Feed:
    try:
        import timm.data
    except Exception as e:
        raise RowSkipped(f"timm cannot be imported ({type(e).__name__}: {e})")
    import torch

    ds = timm.data.ImageDataset(s.root) if s.kind == "imagefolder" else TarDataset(s.root)
    gpu = s.device.startswith("cuda")
    kw = dict(use_prefetcher=True, device=torch.device(s.device), img_dtype=s.torch_dtype()) if gpu else \
        dict(use_prefetcher=False)
    loader = timm.data.create_loader(ds, input_size=(3, s.size, s.size), batch_size=s.batch_size, is_training=True,
                                     color_jitter=0.0, num_workers=s.workers, pin_memory=gpu,
                                     persistent_workers=True, **kw)
    it = iter(loader)

    def gen():
        for images, labels in it:
            yield _on_device(images, labels, s)

    def close():
        nonlocal it
        inner = getattr(it, "_shutdown_workers", None)
        if inner:
            inner()
        del it

    return gen(), close, {"use_prefetcher": bool(gpu), "color_jitter": 0.0, "dataset": type(ds).__name__,
                          "note": None if gpu else "no CUDA: use_prefetcher=False (the prefetcher's normalise "
                                                   "runs on the GPU); the workers normalise instead"}


def row_synthetic(s: Settings) -> Feed:
    import torch

    g = torch.Generator().manual_seed(s.seed)
    images = torch.randn(s.batch_size, 3, s.size, s.size, generator=g).to(s.device, s.torch_dtype())
    labels = torch.randint(0, 1000, (s.batch_size,), generator=g).to(s.device)

    def gen():
        while True:
            yield images, labels

    return gen(), (lambda: None), {"note": "the same pre-made device batch every step"}


ROW_FUNCS = {1: lambda s: row_vitdata(s, True), 2: lambda s: row_vitdata(s, False), 3: row_dali, 4: row_torch,
             5: row_timm, 6: row_synthetic}


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------

def time_windows(it: Iterator, *, batch_size: int, warmup: int, windows: int, steps: int,
                 on_window: Callable[[int], None] | None = None) -> dict:
    """Pull ``warmup`` batches, then time ``windows`` windows of ``steps`` batches, each ending in a
    device sync. Returns raw window seconds, per-window images/s, median, min, max and spread."""
    for _ in range(warmup):
        next(it)
    benchutil.sync()
    window_s = []
    for w in range(windows):
        if on_window:
            on_window(w)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(it)
        benchutil.sync()
        window_s.append(time.perf_counter() - t0)
    return summarize(window_s, steps * batch_size)


def summarize(window_s: list[float], images_per_window: int) -> dict:
    rates = [images_per_window / t for t in window_s]
    med = statistics.median(rates)
    return {"window_s": window_s, "images_per_window": images_per_window, "images_per_s_windows": rates,
            "images_per_s": med, "images_per_s_min": min(rates), "images_per_s_max": max(rates),
            "spread_pct": 100.0 * (max(rates) - min(rates)) / med if med > 0 else 0.0}


def add_ratios(rows: list[dict]) -> None:
    """ratio_to_row4 = images_per_s / images_per_s of row 4 (None when row 4 did not run)."""
    base = next((r["images_per_s"] for r in rows if r["row"] == BASELINE_ROW), None)
    for r in rows:
        r["ratio_to_row4"] = r["images_per_s"] / base if base else None


# --------------------------------------------------------------------------------------------------
# Row 1's per-stage split
# --------------------------------------------------------------------------------------------------

def _time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        fn()
    benchutil.sync()
    times = []
    for _ in range(repeats):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            a.record()
            fn()
            b.record()
            b.synchronize()
            host = time.perf_counter() - t0
            times.append(max(host, a.elapsed_time(b) / 1000.0))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "times_s": times}


def stage_split(s: Settings, loader, delivered_ids: list, wall_s_per_batch: float, wait_s_per_batch: float,
                repeats: int = 3) -> dict:
    """Per-batch cost of each stage of row 1, each run alone on the ids row 1 delivered, with the same
    thread count. The stages overlap inside the loader (reader workers, DALI threads, the consumer's
    thread), so their costs need not add up to the wall time per batch."""
    import torch

    from vitdata import kernels

    cfg = loader.cfg
    dali_size = cfg.image_size
    ids = [int(i) for b in delivered_ids[:repeats + 1] for i in b.cpu().tolist()]
    batches = [ids[k * s.batch_size:(k + 1) * s.batch_size] for k in range(len(ids) // s.batch_size)]
    if not batches:
        return {"error": "no delivered batches to split"}
    reader = loader.reader
    out: dict = {"unit": "seconds per batch", "batch_size": s.batch_size,
                 "note": "each stage timed alone on the ids row 1 delivered, same thread count; stages overlap "
                         "in the loader, so they need not add up to the wall time"}

    encoded = [[reader.read(i) for i in b] for b in batches]
    k = iter(range(10 ** 9))
    out["read"] = {**_time_calls(lambda: [reader.read(i) for i in batches[next(k) % len(batches)]], repeats),
                   "how": "SampleReader.read of the batch's ids, one thread (page cache warm)"}

    why = _dali_importable()
    if why is None:
        from nvidia.dali import fn, pipeline_def, types

        from vitdata.pipelines import randaug
        from vitdata.pipelines.source import NUM_MAG_BINS, magnitude_to_bin

        gpu = s.device.startswith("cuda")
        dev_id = 0 if gpu else None
        state = {"b": 0}

        def enc_source():
            b = encoded[state["b"] % len(encoded)]
            return [np.frombuffer(x, np.uint8) for x in b]

        @pipeline_def(batch_size=s.batch_size, num_threads=s.threads, device_id=dev_id, seed=s.seed + 11,
                      prefetch_queue_depth=1)
        def decode_pipe():
            jpegs = fn.external_source(source=enc_source, batch=True, dtype=types.UINT8, ndim=1)
            img = fn.decoders.image_random_crop(jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                                random_area=list(cfg.augment.scale),
                                                random_aspect_ratio=list(cfg.augment.ratio), num_attempts=10)
            return fn.resize(img, resize_x=dali_size, resize_y=dali_size, antialias=True)

        with _quiet_dali():
            dp = decode_pipe()
            dp.build()

        def run_decode():
            state["b"] += 1
            return dp.run()

        decoded = run_decode()[0]
        decoded_np = [np.array(decoded.as_cpu().at(i) if gpu else decoded.at(i)) for i in range(s.batch_size)]
        out["decode"] = {**_time_calls(run_decode, repeats),
                         "how": f"DALI {'mixed' if gpu else 'cpu'} decoders.image_random_crop + resize to "
                                f"{dali_size}, {s.threads} threads, fed the same encoded bytes"}
        del dp

        n_ops = cfg.augment.randaug_num_ops
        mag = np.full(n_ops, magnitude_to_bin(cfg.augment.randaug_magnitude), np.int32)

        @pipeline_def(batch_size=s.batch_size, num_threads=s.threads, device_id=dev_id, seed=s.seed + 13,
                      prefetch_queue_depth=1, enable_conditionals=True)
        def augment_pipe():
            img = fn.external_source(source=lambda: decoded_np, batch=True, dtype=types.UINT8, ndim=3,
                                     layout="HWC", device="cpu")
            if gpu:
                img = img.gpu()
            mag_bin = fn.external_source(source=lambda: [mag] * s.batch_size, batch=True, dtype=types.INT32, ndim=1)
            active = fn.external_source(source=lambda: [np.ones(n_ops, np.int32)] * s.batch_size, batch=True,
                                        dtype=types.INT32, ndim=1)
            shape = fn.external_source(source=lambda: [np.array([dali_size, dali_size], np.float32)] * s.batch_size,
                                       batch=True, dtype=types.FLOAT, ndim=1)
            img = randaug.apply(img, mag_bin, active, shape, max_ops=n_ops, num_bins=NUM_MAG_BINS)
            return fn.crop_mirror_normalize(img, dtype=types.FLOAT, output_layout="CHW",
                                            mean=[255 * m for m in cfg.output.mean],
                                            std=[255 * v for v in cfg.output.std],
                                            mirror=fn.random.coin_flip(probability=cfg.augment.hflip))

        try:
            with _quiet_dali():
                ap = augment_pipe()
                ap.build()
            out["augment"] = {**_time_calls(ap.run, repeats),
                              "how": f"DALI RandAugment (n={n_ops}, m={cfg.augment.randaug_magnitude}) + flip + "
                                     f"normalise on pre-decoded {dali_size}px images, {s.threads} threads"}
            result = ap.run()[0]
            out["hand_over"] = {**_time_calls(lambda: _on_device(_dali_to_torch(result, s, torch.float32),
                                                                 torch.zeros(s.batch_size, dtype=torch.int64), s),
                                              repeats),
                                "how": "copy of a DALI output batch of the same shape into a torch tensor on the "
                                       "device, cast to the output dtype"}
            del ap
        except Exception as e:  # the isolated RandAugment graph is ours, not the loader's: report, don't fail
            out["augment"] = {"error": f"{type(e).__name__}: {e}"}
    else:
        out["decode"] = out["augment"] = {"error": why}

    x = torch.randn(s.batch_size, 3, dali_size, dali_size, device=s.device)
    gen = torch.Generator().manual_seed(s.seed)
    p = cfg.augment.patch_size

    def run_kernels():
        y = kernels.lowpass_crop(x, s.size)
        params = kernels.sample_patch_erase_params(s.batch_size, (s.size // p, s.size // p), 0.25, gen)
        return kernels.patch_erase(y, params, p, "zero")

    out["kernels"] = {**_time_calls(run_kernels, repeats),
                      "how": f"vitdata.kernels lowpass_crop {dali_size}->{s.size} + PatchErasing (0.25) on a float32 "
                             f"batch, {'CUDA events' if torch.cuda.is_available() else 'perf_counter'}"}
    out["loader_wall"] = {"median_s": wall_s_per_batch, "how": "row 1's median window time / steps"}
    out["consumer_wait"] = {"median_s": wait_s_per_batch,
                            "how": "time blocked in next(loader) per batch during row 1's windows (perf_counter)"}
    return out


# --------------------------------------------------------------------------------------------------
# bench loader
# --------------------------------------------------------------------------------------------------

def run_loader_bench(s: Settings, rows: list[int], skip: dict[int, str], log=print) -> dict:
    """Run the requested rows one after another (each closed before the next starts)."""
    ran, skipped = [], []
    split = None
    for r in rows:
        name, label = ROWS[r]
        if r in skip:
            skipped.append({"row": r, "name": name, "reason": skip[r]})
            log(f"row {r} ({name}): skipped: {skip[r]}")
            continue
        log(f"row {r} ({name}) ...")
        close = None
        try:
            it, close, details = ROW_FUNCS[r](s)
            waits: list[float] = []
            timed = _WaitTimer(it, waits)
            res = time_windows(timed, batch_size=s.batch_size, warmup=s.warmup, windows=s.windows, steps=s.steps)
        except RowSkipped as e:
            skipped.append({"row": r, "name": name, "reason": str(e)})
            log(f"row {r} ({name}): skipped: {e}")
            if close:
                close()
            continue
        except Exception as e:
            reason = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            skipped.append({"row": r, "name": name, "reason": reason})
            log(f"row {r} ({name}): {reason}")
            if close:
                with contextlib.suppress(Exception):
                    close()
            continue
        delivered = details.pop("_delivered_ids", None)
        loader = details.pop("_loader", None)
        timed_waits = waits[s.warmup:]
        details["load_avg_1m_after"] = _load_avg()
        entry = {"row": r, "name": name, "label": label, **res, "details": details,
                 "wait_s_per_batch_median": statistics.median(timed_waits) if timed_waits else None}
        ran.append(entry)
        log(f"row {r} ({name}): {res['images_per_s']:,.0f} images/s (spread {res['spread_pct']:.1f}%)")
        close()   # before the stage split, so the row's workers and prefetch do not compete with it
        del it
        gc.collect()
        if r == 1 and loader is not None:
            try:
                split = stage_split(s, loader, delivered[s.warmup:] or delivered,
                                    statistics.median(res["window_s"]) / s.steps, entry["wait_s_per_batch_median"])
            except Exception as e:
                split = {"error": f"{type(e).__name__}: {e}"}
    add_ratios(ran)
    return {"rows": ran, "skipped": skipped, "stage_split_row1": split}


def _load_avg() -> float | None:
    """1-minute load average (other processes competing for the cores skew CPU figures), or None."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


class _WaitTimer:
    """Iterator wrapper recording the seconds each ``next`` blocks (host time; no sync)."""

    def __init__(self, it, waits: list):
        self.it, self.waits = it, waits

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        item = next(self.it)
        self.waits.append(time.perf_counter() - t0)
        return item


def format_table(result: dict) -> str:
    lines = [f"{'row':<4} {'name':<20} {'images/s':>12} {'spread':>8} {'min..max':>19} {'vs row 4':>9}",
             "-" * 77]
    by_row = {r["row"]: r for r in result["rows"]}
    skipped = {r["row"]: r for r in result["skipped"]}
    for row in sorted(set(by_row) | set(skipped)):
        if row in by_row:
            r = by_row[row]
            ratio = f"{r['ratio_to_row4']:.2f}x" if r["ratio_to_row4"] is not None else "n/a"
            lines.append(f"{row:<4} {r['name']:<20} {r['images_per_s']:>12,.0f} {r['spread_pct']:>7.1f}% "
                         f"{r['images_per_s_min']:>9,.0f}..{r['images_per_s_max']:<8,.0f} {ratio:>9}")
        else:
            r = skipped[row]
            lines.append(f"{row:<4} {r['name']:<20} {'skipped':>12}  {r['reason']}")
    return "\n".join(lines)


def format_split(split: dict | None) -> str:
    if not split:
        return ""
    if "error" in split and len(split) == 1:
        return f"row 1 stage split: unavailable ({split['error']})"
    lines = ["row 1 per-stage cost (ms per batch, each stage timed alone; stages overlap in the loader):"]
    for key in ("read", "decode", "augment", "kernels", "hand_over", "loader_wall", "consumer_wait"):
        v = split.get(key)
        if not v:
            continue
        if "error" in v:
            lines.append(f"  {key:<14} unavailable: {v['error']}")
        elif v.get("median_s") is not None:
            lines.append(f"  {key:<14} {1000 * v['median_s']:9.2f}   {v.get('how', '')}")
    return "\n".join(lines)


def plot_rows(result: dict, path: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["rows"], key=lambda r: r["row"])
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [f"({r['row']}) {r['name']}" for r in rows]
    vals = [r["images_per_s"] for r in rows]
    err = [[r["images_per_s"] - r["images_per_s_min"] for r in rows],
           [r["images_per_s_max"] - r["images_per_s"] for r in rows]]
    bars = ax.barh(names, vals, xerr=err, color=["#4c72b0" if r["row"] <= 2 else "#999999" for r in rows])
    for b, r in zip(bars, rows):
        txt = f" {r['images_per_s']:,.0f}" + (f" ({r['ratio_to_row4']:.2f}x)" if r["ratio_to_row4"] else "")
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, txt, va="center", fontsize=8)
    if any(v > 0 for v in vals) and max(vals) / max(min(vals), 1e-9) > 50:
        ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("images/s (median of windows; bars: min..max)")
    skipped = ", ".join(f"({r['row']}) {r['name']}" for r in result["skipped"])
    ax.set_title(title + (f"\nskipped: {skipped}" if skipped else ""), fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _parse_rows(text: str) -> list[int]:
    rows = sorted({int(x) for x in text.split(",") if x.strip()})
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown rows {bad}; rows are 1..6")
    return rows


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_loader(a: argparse.Namespace) -> int:
    import torch


    device = a.device or _default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    if not os.path.exists(a.data.split("{")[0]):
        print(f"no data at {a.data}", file=sys.stderr)
        return 2
    workers = a.workers if a.workers is not None else (os.cpu_count() or 1)
    threads = a.threads if a.threads is not None else workers
    skip: dict[int, str] = {r: "skipped with --skip" for r in a.skip}
    if not device.startswith("cuda"):
        note = "no CUDA device: runs the CPU path"
    else:
        note = None
    if _dali_importable():
        skip.setdefault(3, _dali_importable())
    needed = (a.warmup + a.windows * a.steps + 2) * a.batch_size
    with prepared_data(a.data, needed, cycle=a.cycle) as (root, idx, cycle):
        s = Settings(data=a.data, root=root, kind=idx.kind, sources=list(idx.sources), num_samples=len(idx),
                     size=a.size, batch_size=a.batch_size, dtype=a.dtype, device=device, workers=workers,
                     threads=threads, warmup=a.warmup, windows=a.windows, steps=a.steps, seed=a.seed, cycle=cycle,
                     patch_size=a.patch_size)
        if note:
            s.extra["note"] = note
        s.extra["load_avg_1m_start"] = _load_avg()
        print(f"vitdata bench loader: {a.data} ({idx.kind}, {len(idx) // cycle} samples"
              f"{f', cycled x{cycle}' if cycle > 1 else ''}), {a.size}px, batch {a.batch_size}, {a.dtype} on {device}, "
              f"{workers} workers / {threads} DALI threads; {a.warmup} warm-up batches + {a.windows} windows x "
              f"{a.steps} batches per row")
        load, cpus = s.extra["load_avg_1m_start"], os.cpu_count() or 1
        if load is not None and load > 0.5 * cpus:
            print(f"  note: load average {load:.1f} on {cpus} CPUs before the run: other processes compete for the "
                  "cores, so CPU figures are low and noisy (each row records the load after it ran)")
        result = run_loader_bench(s, a.rows, skip, log=(lambda m: print("  " + m, flush=True)))
        settings = s.record()
    record = {"settings": settings, **result, "baseline_row": BASELINE_ROW,
              "rows_requested": a.rows, "row_labels": {str(k): v[1] for k, v in ROWS.items()}}
    print()
    print(format_table(result))
    split = format_split(result["stage_split_row1"])
    if split:
        print()
        print(split)
    path = benchutil.write_record("loader", record, a.json)
    print(f"\nrecord: {path}")
    if a.plot:
        env = record["environment"]
        title = (f"vitdata bench loader: {env.get('gpu') or 'CPU'} ({env.get('cpu_count')} CPUs), {a.size}px, "
                 f"batch {a.batch_size}, {a.dtype}")
        print(f"plot: {plot_rows(result, a.plot, title)}")
    return 0


# --------------------------------------------------------------------------------------------------
# bench kernels
# --------------------------------------------------------------------------------------------------

def _kernel_bench_module():
    """benchmarks/bench_kernels.py of a source checkout, imported by path; None when not found."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "benchmarks", "bench_kernels.py")
    if not os.path.isfile(path):
        return None, path
    spec = importlib.util.spec_from_file_location("vitdata_bench_kernels", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, path


def annotate_bandwidth(record: dict, gpu: str | None) -> int:
    """Add ``pct_of_peak_bw`` next to every ``gbs``/``GB/s``-like number in ``record`` (in place); returns
    how many figures were annotated. Without a known GPU nothing is added."""
    peak = peak_bandwidth_gbs(gpu)
    if peak is None:
        return 0
    n = 0

    def walk(obj):
        nonlocal n
        if isinstance(obj, dict):
            for k in list(obj):
                v = obj[k]
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k.lower() in ("gbs", "gb_s", "gb_per_s",
                                                                                               "bandwidth_gbs"):
                    obj[f"{k}_pct_of_peak"] = 100.0 * v / peak
                    n += 1
                else:
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(record)
    record["peak_bandwidth_gbs"] = peak
    return n


def _kernel_results_root(rest: list[str]) -> str:
    for k, arg in enumerate(rest):
        if arg == "--results" and k + 1 < len(rest):
            return rest[k + 1]
        if arg.startswith("--results="):
            return arg.split("=", 1)[1]
    return benchutil.results_dir()


def cmd_kernels(rest: list[str]) -> int:
    """Run the checkout's kernel benchmark, then add the percentage of the GPU's peak memory bandwidth
    to the record it wrote (``gb_per_s_pct_of_peak`` beside each ``gb_per_s``) and print it."""
    mod, path = _kernel_bench_module()
    if mod is None or not hasattr(mod, "main"):
        print(f"vitdata bench kernels: unavailable here: the kernel benchmark lives in the source checkout "
              f"({path}), which this installation does not have", file=sys.stderr)
        return 2
    started = time.time()
    rc = int(mod.main(rest, prog="vitdata bench kernels") or 0)
    if rc or "--no-save" in rest:
        return rc
    written = [p for p in glob.glob(os.path.join(_kernel_results_root(rest), "*", "*-kernels.json"))
               if os.path.getmtime(p) >= started - 1]
    if not written:
        return rc
    rec_path = max(written, key=os.path.getmtime)
    with open(rec_path) as f:
        record = json.load(f)
    gpu = (record.get("env") or record.get("environment") or {}).get("gpu")
    n = annotate_bandwidth(record, gpu)
    if gpu is None:
        print("\nno GPU: GB/s above are host-memory figures; no percentage of a GPU's bandwidth")
        return rc
    if n == 0:
        print(f"\n{gpu}: peak memory bandwidth not in vitdata.bench.PEAK_BANDWIDTH_GBS; no percentages")
        return rc
    from vitdata.io import atomic_write

    atomic_write(rec_path, (json.dumps(record, indent=1) + "\n").encode())
    print(f"\npercent of {gpu}'s peak memory bandwidth ({record['peak_bandwidth_gbs']:,.0f} GB/s):")
    for section in ("lowpass_crop", "patch_erase"):
        for row in record.get(section, []):
            if "gb_per_s_pct_of_peak" in row:
                print(f"  {section:<13} {row['name']:<32} {row['gb_per_s']:>9.1f} GB/s  "
                      f"{row['gb_per_s_pct_of_peak']:>5.1f}%")
    print(f"record updated: {rec_path}")
    return rc


# --------------------------------------------------------------------------------------------------
# bench step
# --------------------------------------------------------------------------------------------------

def time_steps(it: Iterator, step_fn: Callable, *, warmup: int, steps: int) -> dict:
    """Per step: data-wait (blocked in next(it), then a device sync so copies queued by the loader count
    as data) and the whole step (wait + forward/backward/update + sync). Returns raw lists and the
    data-wait fraction sum(wait) / sum(step)."""
    for _ in range(warmup):
        step_fn(*next(it))
    benchutil.sync()
    waits, totals = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(it)
        benchutil.sync()
        t1 = time.perf_counter()
        step_fn(*batch)
        benchutil.sync()
        t2 = time.perf_counter()
        waits.append(t1 - t0)
        totals.append(t2 - t0)
    return {"wait_s": waits, "step_s": totals, "wait_s_median": statistics.median(waits),
            "step_s_median": statistics.median(totals), "data_wait_fraction": sum(waits) / sum(totals)}


def cmd_step(a: argparse.Namespace) -> int:
    import timm
    import torch

    device = a.device or _default_device()
    gpu = device.startswith("cuda")
    workers = a.workers if a.workers is not None else (os.cpu_count() or 1)
    threads = a.threads if a.threads is not None else workers
    torch.manual_seed(a.seed)
    model = timm.create_model(a.model, pretrained=False, num_classes=a.num_classes, img_size=a.size).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    crit = torch.nn.CrossEntropyLoss()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else contextlib.nullcontext()

    def step_fn(images, labels):
        with autocast:
            loss = crit(model(images), labels % a.num_classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    feeds, skipped = {}, []
    print(f"vitdata bench step: {a.model} at {a.size}px, batch {a.batch_size}, "
          f"{'bf16 autocast' if gpu else 'float32'} on {device}; {a.warmup} warm-up + {a.steps} timed steps per feed")
    g = torch.Generator().manual_seed(a.seed)
    syn_x = torch.randn(a.batch_size, 3, a.size, a.size, generator=g).to(device)
    syn_y = torch.randint(0, a.num_classes, (a.batch_size,), generator=g).to(device)

    def synthetic():
        while True:
            yield syn_x, syn_y

    feeds["synthetic"] = time_steps(synthetic(), step_fn, warmup=a.warmup, steps=a.steps)
    settings = {"model": a.model, "size": a.size, "batch_size": a.batch_size, "device": device,
                "precision": "bf16 autocast" if gpu else "float32", "optimizer": "AdamW", "warmup_steps": a.warmup,
                "steps": a.steps, "workers": workers, "threads": threads, "loader": a.loader, "data": a.data}
    why = None if a.data else "no --data given"
    why = why or _loader_importable()
    if why:
        skipped.append({"feed": "vitdata", "reason": why})
    else:
        needed = (a.warmup + a.steps + 2) * a.batch_size
        with prepared_data(a.data, needed) as (root, idx, cycle):
            s = Settings(data=a.data, root=root, kind=idx.kind, sources=list(idx.sources), num_samples=len(idx),
                         size=a.size, batch_size=a.batch_size, dtype="float32", device=device, workers=workers,
                         threads=threads, warmup=a.warmup, windows=1, steps=a.steps, seed=a.seed, cycle=cycle,
                         patch_size=a.patch_size)
            settings["cycled"] = cycle
            try:
                it, close, details = row_vitdata(s, a.loader == "curriculum")
                details.pop("_delivered_ids", None)
                details.pop("_loader", None)
                try:
                    feeds["vitdata"] = {**time_steps(it, step_fn, warmup=a.warmup, steps=a.steps),
                                        "details": details}
                finally:
                    close()
            except RowSkipped as e:
                skipped.append({"feed": "vitdata", "reason": str(e)})
    print(f"{'feed':<10} {'step ms':>9} {'data-wait ms':>13} {'data-wait %':>12}")
    for name, f in feeds.items():
        print(f"{name:<10} {1000 * f['step_s_median']:>9.1f} {1000 * f['wait_s_median']:>13.2f} "
              f"{100 * f['data_wait_fraction']:>11.2f}%")
    for sk in skipped:
        print(f"{sk['feed']:<10} skipped: {sk['reason']}")
    if "vitdata" in feeds:
        slow = feeds["vitdata"]["step_s_median"] / feeds["synthetic"]["step_s_median"]
        print(f"vitdata-fed step / synthetic-fed step: {slow:.3f}x")
    record = {"settings": settings, "feeds": feeds, "skipped": skipped,
              "definition": "data_wait_fraction = sum over timed steps of (time blocked in next(loader) + sync) / "
                            "sum of whole-step times"}
    path = benchutil.write_record("step", record, a.json)
    print(f"record: {path}")
    return 0


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

def build_parser(prog: str = "vitdata bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Measure data throughput: loader, kernels, training step.")
    sub = p.add_subparsers(dest="what", metavar="{loader,kernels,step}")

    lo = sub.add_parser("loader", help="images/s of vitdata vs DALI, torch DataLoader, timm and a synthetic batch",
                        description=__doc__.split("Loader rows")[0].strip() + "\n\nRows:\n" +
                        "\n".join(f"  {k}. {v[1]}" for k, v in ROWS.items()),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    lo.add_argument("--data", required=True, help="ImageFolder root, dir of .tar shards, or a shard pattern")
    lo.add_argument("--size", type=int, default=224, help="output side in pixels (default 224)")
    lo.add_argument("--batch-size", type=int, default=256)
    lo.add_argument("--steps", type=int, default=10, help="batches per timed window (default 10)")
    lo.add_argument("--windows", type=int, default=5, help="timed windows per row (default 5)")
    lo.add_argument("--warmup", type=int, default=5, help="batches before the first window (default 5)")
    lo.add_argument("--workers", type=int, default=None, help="DataLoader / DALI source workers (default: CPU count)")
    lo.add_argument("--threads", type=int, default=None, help="DALI CPU threads (default: --workers)")
    lo.add_argument("--dtype", choices=DTYPES, default="float32", help="output dtype of every row")
    lo.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    lo.add_argument("--rows", type=_parse_rows, default=list(ROWS), help="comma-separated rows to run (default all)")
    lo.add_argument("--skip", type=_parse_rows, default=[], help="comma-separated rows to skip (recorded as such)")
    lo.add_argument("--cycle", type=int, default=None, help="repeat the data K times (default: as needed)")
    lo.add_argument("--patch-size", type=int, default=16, help="PatchErasing cell / rounding of row 1's sizes")
    lo.add_argument("--seed", type=int, default=0)
    lo.add_argument("--json", help="record path (default benchmarks/results/<device>/<date>-loader.json)")
    lo.add_argument("--plot", help="bar chart PNG path")

    ke = sub.add_parser("kernels", help="GB/s of the curriculum kernels and percent of the GPU's bandwidth",
                        add_help=False)
    ke.add_argument("-h", "--help", action="store_true")

    st = sub.add_parser("step", help="data-wait fraction of a ViT training step: vitdata vs synthetic batches")
    st.add_argument("--data", default=None, help="data for the vitdata feed (without it only the synthetic runs)")
    st.add_argument("--model", default="vit_small_patch16_224",
                    help="timm model (vit_tiny/small/base_patch16_224), pretrained=False")
    st.add_argument("--size", type=int, default=224)
    st.add_argument("--batch-size", type=int, default=256)
    st.add_argument("--steps", type=int, default=30, help="timed steps per feed")
    st.add_argument("--warmup", type=int, default=5)
    st.add_argument("--num-classes", type=int, default=1000)
    st.add_argument("--loader", choices=("plain", "curriculum"), default="curriculum",
                    help="vitdata configuration: row 1 (curriculum) or row 2 (plain) of 'bench loader'")
    st.add_argument("--workers", type=int, default=None)
    st.add_argument("--threads", type=int, default=None)
    st.add_argument("--patch-size", type=int, default=16)
    st.add_argument("--device", default=None)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--json", help="record path (default benchmarks/results/<device>/<date>-step.json)")
    return p


def main(argv: list[str] | None = None, prog: str = "vitdata bench") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser(prog)
    if argv and argv[0] == "kernels":
        if "-h" in argv[1:] or "--help" in argv[1:]:
            mod, path = _kernel_bench_module()
            print(f"usage: {prog} kernels [options of benchmarks/bench_kernels.py]\n\nRuns the kernel benchmark of the "
                  f"source checkout ({path}) and reports GB/s with the percentage of the GPU's peak memory bandwidth.")
            if mod is not None and hasattr(mod, "main"):
                with contextlib.suppress(SystemExit):
                    mod.main(["--help"], prog=f"{prog} kernels")
            return 0
        return cmd_kernels(argv[1:])
    a = p.parse_args(argv)
    if a.what == "loader":
        with _quiet_dali():
            return cmd_loader(a)
    if a.what == "step":
        with _quiet_dali():
            return cmd_step(a)
    p.print_help()
    return 0 if not argv else 2
