"""The seven ways ``bench loader`` feeds (B, 3, S, S) batches of the same data, size, dtype and device.

Each ``row_*`` function returns ``(iterator of (images, labels), close, details)``; ``details`` goes into
the row's record. A DALI row records ``dali_device_id``: the device id its pipeline was built with
(None: CPU operators), and ``runs_on`` ("GPU" only when that id is set), so a row is never called a GPU
figure when its graph ran on CPU threads.

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
7     torch-timm-augment    ``torch.utils.data.DataLoader``, N workers, the augmentations of row 1
                            the way timm users run them: ``timm.data.create_transform`` with
                            RandAugment (``rand-m9-n2-inc1``: n=2, m=9), RandomErasing
                            (p=0.25, per-pixel), RRC, flip, normalise; the baseline of row 1
====  ====================  =====================================================================

Rows 1 and 2 decode plain JPEGs at 1/2, 1/4 or 1/8 scale where the crop window allows it
(``LoaderConfig.decode_scale``): "auto" by default (DALI's own ROI decode on CPU), ``--decode-scale on``
runs the source's reduced decode, ``off`` full decodes everywhere. They read the data's levels store
(``LoaderConfig.decode_levels``) that ``bench loader`` builds first unless ``--decode-levels off``.
"""
from __future__ import annotations

import json
import math
from typing import Callable, Iterator

import numpy as np

from .common import IMAGENET_MEAN, IMAGENET_STD, RowSkipped, Settings, dali_importable, loader_importable, quiet_dali

ROWS = {
    1: ("vitdata-curriculum", "vitdata, full curriculum (RandAugment, Fourier crop, PatchErasing, oracle sampling)"),
    2: ("vitdata-plain", "vitdata, plain (random-resized crop, flip, normalise)"),
    3: ("dali", "plain DALI pipeline (reader, decode+RRC, resize, crop_mirror_normalize)"),
    4: ("torch-dataloader", "torch DataLoader + torchvision transforms v2, N workers"),
    5: ("timm", "timm create_loader"),
    6: ("synthetic", "synthetic in-memory batch (the consumer's own cost)"),
    7: ("torch-timm-augment", "torch DataLoader + timm create_transform (RandAugment m9 n2, RandomErasing 0.25)"),
}
# Row 1 runs the augmentations of row 7: its ratio is also given against row 7.
AUGMENT_BASELINE_ROW = 7
BASELINE_ROW = 4

Feed = tuple[Iterator, Callable[[], None], dict]


def on_device(images, labels, s: Settings):
    import torch

    dev = torch.device(s.device)
    if images.device != dev:
        images = images.to(dev, non_blocking=True)
    if images.dtype != s.torch_dtype():
        images = images.to(s.torch_dtype())
    return images, labels.to(dev, non_blocking=True)


def where(dali_device_id: int | None) -> dict:
    return {"dali_device_id": dali_device_id, "runs_on": "CPU" if dali_device_id is None else "GPU"}


def vitdata_workers(s: Settings) -> tuple[int, int]:
    """(source workers, DALI threads) of rows 1 and 2. With a GPU: ``s.source_workers`` source processes and
    ``s.threads`` threads. On a CPU-only run the source runs in the pipeline's thread instead
    (``num_workers=0``: decoding, not reading, is the cost there, and worker processes only add copies),
    and that thread's reading takes the place of the worker processes, so DALI gets one thread more than
    ``s.threads`` (measured on 2 cores: 2 threads + 2 workers 668-679 img/s plain, 0 workers + 3 threads
    731-745)."""
    return (0, s.threads + 1) if not s.gpu else (s.source_workers, s.threads)


def vitdata_config(s: Settings, curriculum: bool):
    """LoaderConfig of row 1 (``curriculum``) or row 2; the output is (B, 3, size, size) either way."""
    from vitdata.loader.config import AugmentConfig, LoaderConfig, OutputConfig, ScheduleConfig

    out = OutputConfig(dtype=s.dtype, device=s.device)
    workers, threads = vitdata_workers(s)
    common = dict(data=s.root, batch_size=s.batch_size, output=out, num_workers=workers, num_threads=threads,
                  seed=s.seed, decode_scale=s.extra.get("decode_scale", "auto"),
                  decode_levels=_levels_root(s))
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


def _levels_root(s: Settings) -> str | None:
    """The folder of the levels store ``bench loader`` built (``--decode-levels build``), else None."""
    import os

    store = (s.extra.get("decode_levels") or {}).get("store")
    return os.path.dirname(store) if store else None


def _primed_oracle(num_samples: int, device: str, seed: int):
    """A ``weighted`` oracle that has seen one epoch of per-sample losses (drawn, not trained), so the
    plan it hands the sampler is skewed the way a real run's is."""
    import torch

    from vitdata.oracle.difficulty import DifficultyOracle

    oracle = DifficultyOracle(num_samples, policy="weighted", device=device, seed=seed, floor=0.5)
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(num_samples)
    losses = torch.empty(num_samples).exponential_(1.0, generator=g)
    for chunk in range(0, num_samples, 4096):
        oracle.report(ids[chunk:chunk + 4096].to(device), losses[chunk:chunk + 4096].to(device))
    return oracle


def config_dict(cfg) -> dict:
    import dataclasses

    d = dataclasses.asdict(cfg)
    d.get("schedule", {}).pop("schedule", None)
    return json.loads(json.dumps(d, default=str))


def row_vitdata(s: Settings, curriculum: bool) -> Feed:
    """Rows 1 and 2. ``details`` also carries ``_loader`` and ``_delivered_ids`` for the stage split; the
    caller pops them before recording."""
    why = loader_importable()
    if why:
        raise RowSkipped(why)
    import torch

    from vitdata.loader.loader import create_loader

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
            if len(delivered) < 8:
                delivered.append(batch.ids)
            if curriculum:
                loader.report(batch.ids, fake_loss[:batch.ids.shape[0]])
            yield batch.images, batch.labels

    dev_id = loader.dali_device_id
    conf = config_dict(cfg)
    conf["dali_device_id"] = dev_id
    details = {"backend": loader.backend_name, "config": conf, "steps_per_epoch": steps, **where(dev_id),
               "decode_scale": loader.graph_spec.decode_scale if loader.graph_spec is not None else cfg.decode_scale,
               "_loader": loader, "_delivered_ids": delivered}
    if curriculum:
        details.update(oracle_policy="weighted", oracle_floor=0.5, epoch=1, fourier_crop=f"{cfg.image_size}->{s.size}",
                       erase_ratio=0.25, randaug="n=2 m=9")
    return gen(), loader.close, details


def plain_pipeline_device_id(s: Settings) -> int | None:
    """The device id the plain DALI pipeline (row 3) is built with: torch's current device with a GPU, else
    None. The vitdata rows use the id their loader reports (``Loader.dali_device_id``)."""
    if not s.gpu:
        return None
    import torch

    return torch.device(s.device).index if torch.device(s.device).index is not None else torch.cuda.current_device()


def _dali_plain_pipeline(s: Settings, device_id: int | None, threads: int):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=s.batch_size, num_threads=threads, device_id=device_id, seed=s.seed + 3,
                  prefetch_queue_depth=2)
    def plain():
        if s.kind == "imagefolder":
            jpegs, labels = fn.readers.file(file_root=s.root, random_shuffle=True, name="Reader")
        else:
            jpegs, labels = fn.readers.webdataset(paths=s.sources, ext=["jpg;jpeg;png", "cls"], random_shuffle=True,
                                                  name="Reader")
        images = fn.decoders.image_random_crop(jpegs, device="cpu" if device_id is None else "mixed",
                                               output_type=types.RGB, random_area=[0.08, 1.0],
                                               random_aspect_ratio=[3 / 4, 4 / 3], num_attempts=10)
        images = fn.resize(images, resize_x=s.size, resize_y=s.size, antialias=True)
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT16 if s.dtype == "float16" else types.FLOAT,
                                          output_layout="CHW", mean=[255 * m for m in IMAGENET_MEAN],
                                          std=[255 * v for v in IMAGENET_STD],
                                          mirror=fn.random.coin_flip(probability=0.5))
        return images, labels

    return plain()


def dali_to_torch(tl, s: Settings, dtype):
    """Copy a dense DALI TensorList into a new torch tensor: on the current stream of the row's device when
    the list lives on a GPU, else on the host."""
    import torch
    from nvidia.dali.plugin.pytorch import feed_ndarray
    from nvidia.dali.tensors import TensorListGPU

    t = tl.as_tensor()
    on_gpu = isinstance(tl, TensorListGPU)
    out = torch.empty(t.shape(), dtype=dtype, device=s.device if on_gpu else "cpu")
    feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream(out.device) if on_gpu else None)
    return out


def row_dali(s: Settings) -> Feed:
    why = dali_importable()
    if why:
        raise RowSkipped(why)
    import torch

    dev_id = plain_pipeline_device_id(s)
    # With a GPU the plain pipeline's reader runs in DALI's threads, so it gets the cores vitdata splits
    # between its threads and source workers: both sides use every usable CPU.
    threads = s.threads + s.source_workers if s.gpu else s.threads
    with quiet_dali():
        pipe = _dali_plain_pipeline(s, dev_id, threads)
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
            yield on_device(dali_to_torch(images, s, out_dtype), labels_of(labels), s)

    def close():
        nonlocal pipe
        del pipe

    return gen(), close, {"reader": "file" if s.kind == "imagefolder" else "webdataset",
                          "decoder": "cpu" if dev_id is None else "mixed", "num_threads": threads,
                          **where(dev_id)}


class TarDataset:
    """Samples of WebDataset shards read through ``vitdata.data.reader.SampleReader``, decoded by the torch
    backend's Pillow decoder. ``transform`` is public so timm's ``create_loader`` can set it."""

    def __init__(self, source: str, transform=None):
        from vitdata.data.reader import SampleReader
        from vitdata.data.index import open_index

        self.index = open_index(source)
        self.reader = SampleReader(self.index)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        from vitdata.loader.backends.torch import decode_rgb

        img = decode_rgb(self.reader.read(i))
        return (self.transform(img) if self.transform else img), int(self.index.label[i])


def _dataloader_feed(ds, s: Settings):
    """A shuffled torch DataLoader over ``ds`` with the row's workers, seed and pinning: (the loader, the
    generator of its batches on the device, the close that stops its workers)."""
    import torch

    dl = torch.utils.data.DataLoader(ds, batch_size=s.batch_size, shuffle=True, drop_last=True,
                                     num_workers=s.workers, pin_memory=s.gpu, persistent_workers=s.workers > 0,
                                     generator=torch.Generator().manual_seed(s.seed))
    it = iter(dl)

    def gen():
        for images, labels in it:   # torchvision v2 wraps images in a tv_tensors.Image: a plain tensor here
            yield on_device(images.as_subclass(torch.Tensor), labels, s)

    def close():
        nonlocal it
        if hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        del it

    return dl, gen(), close


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
    dl, gen, close = _dataloader_feed(ds, s)
    return gen, close, {"dataset": type(ds).__name__, "decode": "Pillow", "pin_memory": s.gpu,
                        "num_workers": s.workers, "steps_per_epoch": len(dl)}


def row_timm(s: Settings) -> Feed:
    try:
        import timm.data
    except Exception as e:
        raise RowSkipped(f"timm cannot be imported ({type(e).__name__}: {e})")
    import torch

    ds = timm.data.ImageDataset(s.root) if s.kind == "imagefolder" else TarDataset(s.root)
    kw = dict(use_prefetcher=True, device=torch.device(s.device), img_dtype=s.torch_dtype()) if s.gpu else \
        dict(use_prefetcher=False)
    loader = timm.data.create_loader(ds, input_size=(3, s.size, s.size), batch_size=s.batch_size, is_training=True,
                                     color_jitter=0.0, num_workers=s.workers, pin_memory=s.gpu,
                                     persistent_workers=True, **kw)
    it = iter(loader)

    def gen():
        for images, labels in it:
            yield on_device(images, labels, s)

    def close():
        nonlocal it
        inner = getattr(it, "_shutdown_workers", None)
        if inner:
            inner()
        del it

    return gen(), close, {"use_prefetcher": s.gpu, "color_jitter": 0.0, "dataset": type(ds).__name__,
                          "num_workers": s.workers,
                          "note": None if s.gpu else "no CUDA: use_prefetcher=False (the prefetcher's normalise "
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


def row_timm_augment(s: Settings) -> Feed:
    """Row 7: a DataLoader over ``timm.data.create_transform(is_training=True)`` with RandAugment and
    RandomErasing, as timm's ``train.py --aa rand-m9-n2-inc1 --reprob 0.25`` builds it. No ``mstd`` (DeiT's
    magnitude noise): a noisy magnitude of 10 makes timm's PosterizeIncreasing ask Pillow 13 for 0 bits,
    which Pillow refuses (timm 1.0.31); a fixed m=9 is also what row 1 runs."""
    try:
        import timm.data
    except Exception as e:
        raise RowSkipped(f"timm cannot be imported ({type(e).__name__}: {e})")

    tf = timm.data.create_transform(s.size, is_training=True, auto_augment="rand-m9-n2-inc1", re_prob=0.25,
                                    re_mode="pixel", color_jitter=0.0, interpolation="bilinear")
    if s.kind == "imagefolder":
        ds = timm.data.ImageDataset(s.root, transform=tf)
    else:
        ds = TarDataset(s.root, transform=tf)
    dl, gen, close = _dataloader_feed(ds, s)
    return gen, close, {"dataset": type(ds).__name__, "transform": "timm.data.create_transform(auto_augment="
                        "'rand-m9-n2-inc1', re_prob=0.25, re_mode='pixel', color_jitter=0)",
                        "num_workers": s.workers, "steps_per_epoch": len(dl)}


ROW_FUNCS = {1: lambda s: row_vitdata(s, True), 2: lambda s: row_vitdata(s, False), 3: row_dali, 4: row_torch,
             5: row_timm, 6: row_synthetic, 7: row_timm_augment}
