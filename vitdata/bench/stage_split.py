"""The per-stage cost of a vitdata row (1: curriculum, 2: plain): each stage of its loader run alone, on
the ids the row delivered, with the row's graph builders, device id and thread count.

Stages (seconds per batch, median of ``repeats``):

==============  =====================================================================================
read            ``SampleReader.read`` of the batch's ids, one thread (page cache warm)
decode          the crop windows drawn and decoded: the source's reduced JPEG decodes (with
                ``decode_scale``, on the row's thread count) and DALI's ROI decode of the rest
                (``pipelines.graphs.decode_window``); no resize
crop_resize     ``pipelines.graphs.resize_window`` alone: the decoded windows, handed in as pixels,
                resized to the row's DALI size
augment         ``pipelines.graphs.augment_graph`` alone on resized images: RandAugment (row 1), flip,
                normalise (or uint8 out when the row's graph stops there)
kernels         row 1: ``vitdata.kernels`` low-pass crop + PatchErasing on the device, on a batch of
                the graph's output type (uint8 cropped, normalised and cast in one pass when the graph
                stops at uint8, else float32)
hand_over       copy of one graph output batch into a torch tensor on the device
loader_wall     the row's median window time / steps
consumer_wait   time blocked in ``next(loader)`` per batch during the row's windows
==============  =====================================================================================

Every timed call ends in a device-wide sync, so work on DALI's own stream is inside the call it
belongs to (this split is not a hot loop). The stages overlap inside the loader (source, DALI threads,
the consumer's thread), so their costs need not add up to the wall time per batch; nothing here is
derived by subtraction.
"""
from __future__ import annotations

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from vitdata.bench import record

from .common import Settings, quiet_dali
from .feeds import dali_to_torch


# Each stage is timed alone: the sync waits for the whole device, DALI's streams as well as torch's.
ALONE = dict(warmup=1, device_wide=True)


_WINDOW = ("encoded", "anchor", "shape", "decoded", "hwc", "roi_start", "roi_end")
_TYPES = {"encoded": types.UINT8, "anchor": types.INT32, "shape": types.INT32, "decoded": types.INT32,
          "hwc": types.INT32, "roi_start": types.FLOAT, "roi_end": types.FLOAT, "images": types.UINT8,
          "size": types.FLOAT, "mag_bin": types.INT32, "active": types.INT32}
_NDIM = {"decoded": 0, "images": 3}


@pipeline_def(enable_conditionals=True)
def _stage_pipeline(source, names, stage: str, spec, decode_device: str, gpu: bool):
    """One stage of the loader's graph around a batch source of the outputs ``names``."""
    from vitdata.pipelines.graphs import augment_graph, decode_window, resize_window

    outs = fn.external_source(source=source, num_outputs=len(names), batch=True,
                              dtype=[_TYPES[n] for n in names], ndim=[_NDIM.get(n, 1) for n in names],
                              layout=["HWC" if n == "images" else "" for n in names])
    node = dict(zip(names, outs))
    if stage == "decode":
        return decode_window(node["encoded"], node, spec, decode_device)
    images = node["images"].gpu() if gpu else node["images"]
    if stage == "crop_resize":
        return resize_window(images, node["size"], node, spec)
    return augment_graph(images, node["size"], node.get("mag_bin"), node.get("active"), spec)


class _BatchSource:
    """Cycles over prepared batches: each a dict of per-sample values by name, or a callable making one."""

    def __init__(self, batches: list, names: tuple[str, ...]):
        self.batches, self.names, self.k = batches, names, 0

    def __call__(self):
        b = self.batches[self.k % len(self.batches)]
        self.k += 1
        b = b() if callable(b) else b
        return tuple(b[n] for n in self.names)


def _run_stage(stage, names, batches, spec, s: Settings, device_id, threads: int, repeats: int, how: str):
    with quiet_dali():
        pipe = _stage_pipeline(_BatchSource(batches, names), names, stage, spec,
                               "cpu" if device_id is None else "mixed", device_id is not None,
                               batch_size=s.batch_size, num_threads=threads, device_id=device_id, seed=s.seed + 11,
                               prefetch_queue_depth=1)
        pipe.build()
    timed = record.measure(lambda: pipe.run(), repeats=repeats, **ALONE)
    outs = [pipe.run()[0] for _ in range(len(batches))]   # one more pass: the next stage's input, in order
    del pipe
    return {**timed, "how": how}, outs


def _host_arrays(tl) -> list[np.ndarray]:
    tl = tl.as_cpu() if hasattr(tl, "as_cpu") else tl
    return [np.array(tl.at(i)) for i in range(len(tl))]


def stage_split(s: Settings, loader, delivered_ids: list, wall_s_per_batch: float, wait_s_per_batch: float,
                repeats: int = 3, with_kernels: bool = False) -> dict:
    """The table in the module docstring for a vitdata row's ``loader`` (closed: its pipeline no longer runs);
    ``with_kernels``: time row 1's low-pass crop + PatchErasing too."""
    from vitdata.decode.levels import store_dir
    from vitdata.pipelines.source import CropSpec, crop_windows

    cfg, spec = loader.cfg, loader.graph_spec
    size, device_id, threads = cfg.image_size, loader.dali_device_id, cfg.num_threads
    ids = [int(i) for b in delivered_ids[:repeats + 1] for i in b.cpu().tolist()]
    batches = [ids[k * s.batch_size:(k + 1) * s.batch_size] for k in range(len(ids) // s.batch_size)]
    if not batches:
        return {"error": "no delivered batches to split"}
    reader = loader.reader
    where = "CPU operators" if device_id is None else f"GPU {device_id} (mixed decode)"
    out: dict = {"unit": "seconds per batch", "batch_size": s.batch_size, "size": size, "dali_device_id": device_id,
                 "decode_scale": spec.decode_scale, "levels": spec.levels,
                 "note": "each stage timed alone on the ids the row delivered, same thread count; stages overlap "
                         "in the loader, so they need not add up to the wall time"}
    encoded = [[reader.read(i) for i in b] for b in batches]
    k = iter(range(10 ** 9))
    out["read"] = {**record.measure(lambda: [reader.read(i) for i in batches[next(k) % len(batches)]], repeats=repeats,
                                      **ALONE),
                   "how": "SampleReader.read of the batch's ids, one thread (page cache warm)"}

    from concurrent.futures import ThreadPoolExecutor

    levels = store_dir(cfg.decode_levels, loader.index.fingerprint) if spec.levels else None
    crop = CropSpec(tuple(cfg.augment.scale), tuple(cfg.augment.ratio), cfg.seed, 0, spec.decode_scale, threads,
                    levels)
    pool = ThreadPoolExecutor(threads) if spec.decode_scale and threads > 1 else None
    names = _WINDOW if spec.decode_scale else _WINDOW[:3]

    def windows(b, first):
        return lambda: crop_windows(encoded[b], range(first, first + s.batch_size), 0, size, crop, pool, batches[b])

    makers = [windows(b, b * s.batch_size) for b in range(len(batches))]
    out["decode"], decoded = _run_stage(
        "decode", names, makers, spec, s, device_id, threads, repeats,
        f"crop windows drawn and decoded ({'source reduced JPEG decodes + ' if spec.decode_scale else ''}"
        f"{'the levels their windows allow + ' if spec.levels else ''}"
        f"decoders.image_slice), no resize; {where}, {threads} threads")
    made = [m() for m in makers]
    size_arr = np.array([size, size], np.float32)
    resize_in = []
    for d, w in zip(decoded, made):
        imgs = _host_arrays(d)
        resize_in.append({"images": imgs, "size": [size_arr] * len(imgs), "roi_start": list(w["roi_start"]),
                          "roi_end": list(w["roi_end"])})
    rnames = ("images", "size") + (("roi_start", "roi_end") if spec.decode_scale or spec.levels else ())
    out["crop_resize"], resized = _run_stage(
        "crop_resize", rnames, resize_in, spec, s, device_id, threads, repeats,
        f"resize_window alone: the decoded windows to {size} px; {where}, {threads} threads")
    out.update(_augment_and_after(s, loader, spec, resized, size_arr, device_id, threads, repeats, where))
    if with_kernels:
        out["kernels"] = _kernels(s, cfg, spec, repeats)
    if pool is not None:
        pool.shutdown()
    out["loader_wall"] = {"median_s": wall_s_per_batch, "how": "the row's median window time / steps"}
    out["consumer_wait"] = {"median_s": wait_s_per_batch,
                            "how": "time blocked in next(loader) per batch during the row's windows (perf_counter)"}
    return out


def _augment_and_after(s, loader, spec, resized, size_arr, device_id, threads, repeats, where) -> dict:
    import torch

    from vitdata.curriculum.schedule import magnitude_to_bin

    cfg, out = loader.cfg, {}
    anames = ("images", "size") + (("mag_bin", "active") if spec.randaug else ())
    mag = np.full(spec.max_ops, magnitude_to_bin(cfg.augment.randaug_magnitude or 0.0), np.int32)
    active = (np.arange(spec.max_ops) < (cfg.augment.randaug_num_ops or 0)).astype(np.int32)
    aug_in = []
    for r in resized:
        imgs = _host_arrays(r)
        aug_in.append({"images": imgs, "size": [size_arr] * len(imgs), "mag_bin": [mag] * len(imgs),
                       "active": [active] * len(imgs)})
    ra = f"RandAugment (n={cfg.augment.randaug_num_ops}, m={cfg.augment.randaug_magnitude}) + " if spec.randaug else ""
    out["augment"], results = _run_stage(
        "augment", anames, aug_in, spec, s, device_id, threads, repeats,
        f"augment_graph alone: {ra}flip + {'normalise' if spec.normalize else 'uint8 out'}; {where}, {threads} threads")
    dtype = torch.uint8 if not spec.normalize else torch.float16 if spec.float16 else torch.float32
    out["hand_over"] = {**record.measure(lambda: dali_to_torch(results[0], s, dtype), repeats=repeats, **ALONE),
                        "how": "one copy of the graph's output batch into a torch tensor on the device"}
    return out


def _kernels(s: Settings, cfg, spec, repeats: int) -> dict:
    import torch

    from vitdata import kernels

    gen = torch.Generator().manual_seed(s.seed)
    p, size = cfg.augment.patch_size, cfg.image_size
    if spec.normalize:
        x = torch.randn(s.batch_size, 3, size, size, device=s.device)
        fused, what = {}, "a float32 batch"
    else:   # what the loader runs on a low-pass step: crop + normalise + dtype + layout in one pass
        x = torch.randint(0, 256, (s.batch_size, 3, size, size), dtype=torch.uint8, device=s.device)
        o = cfg.output
        fused = dict(mean=[255 * m for m in o.mean], std=[255 * v for v in o.std], out_dtype=getattr(torch, o.dtype),
                     memory_format=torch.channels_last if o.channels_last else torch.contiguous_format)
        what = f"a uint8 batch (normalise + {o.dtype} out fused)"

    def run_kernels():
        y = kernels.lowpass_crop(x, s.size, **fused)
        params = kernels.sample_patch_erase_params(s.batch_size, (s.size // p, s.size // p), 0.25, gen,
                                                   device=y.device)
        return kernels.patch_erase(y, params, p, "zero")

    return {**record.measure(run_kernels, repeats=repeats, **ALONE),
            "how": f"vitdata.kernels lowpass_crop {size}->{s.size} + PatchErasing (0.25) on {what} on {x.device}"}
