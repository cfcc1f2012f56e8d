"""Row 1's per-stage cost: each stage of the curriculum loader run alone on the ids row 1 delivered.

Stages (seconds per batch, median of ``repeats``):

==============  =====================================================================================
read            ``SampleReader.read`` of the batch's ids, one thread (page cache warm)
decode          the loader's own graph builder, ``pipelines.graphs.train_graph``, with RandAugment
                and flip off: decode + random-resized crop, resize, normalise
graph           ``train_graph`` with row 1's ``GraphSpec`` (what the loader runs per batch)
kernels         ``vitdata.kernels``: low-pass crop + PatchErasing on the device, on the batch the graph
                delivers: uint8 cropped, normalised and cast to the output dtype in one pass when the
                graph stops at uint8 (``GraphSpec.normalize`` False, as with row 1's low-pass
                schedule), else a normalised float32 batch
hand_over       copy of one graph output batch into a torch tensor on the device (one copy per batch)
loader_wall     row 1's median window time / steps
consumer_wait   time blocked in ``next(loader)`` per batch during row 1's windows
==============  =====================================================================================

The two DALI graphs run with row 1's device id (``Loader.dali_device_id``: "mixed" decode and GPU
operators when it is set, CPU operators when it is None) and thread count, fed the encoded bytes of
the delivered ids through an external source. Every timed call ends in a device-wide sync, so work on
DALI's own stream is inside the call it belongs to (this split is not a hot loop). The stages overlap
inside the loader (reader workers, DALI threads, the consumer's thread), so their costs need not add up
to the wall time per batch; nothing here is derived by subtraction.
"""
from __future__ import annotations

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from vitdata.bench import record

from .common import Settings, quiet_dali
from .feeds import dali_to_torch

# Each stage is timed alone: the sync waits for the whole device, DALI's streams as well as torch's.
ALONE = dict(warmup=1, device_wide=True)


@pipeline_def(enable_conditionals=True)
def _stage_pipeline(source, spec, decode_device: str):
    """``train_graph`` around a batch source of (encoded, size, mag_bin, active): the loader's graph, fed
    fixed bytes and knobs instead of the sampler's control."""
    from vitdata.pipelines.graphs import train_graph

    k = 4 if spec.randaug else 2   # the RandAugment knobs only where the graph reads them
    outs = fn.external_source(source=source, num_outputs=k, batch=True,
                              dtype=[types.UINT8, types.FLOAT, types.INT32, types.INT32][:k], ndim=[1] * k)
    encoded, size, mag_bin, active = (list(outs) + [None, None])[:4]
    return train_graph(encoded, size, mag_bin, active, spec, decode_device)


class _BatchSource:
    """Cycles over pre-read batches of encoded bytes; the knobs are row 1's (constant schedule)."""

    def __init__(self, encoded: list[list[bytes]], size: int, mag_bin: np.ndarray | None = None,
                 active: np.ndarray | None = None):
        self.encoded = [[np.frombuffer(x, np.uint8) for x in b] for b in encoded]
        self.size = np.array([size, size], np.float32)
        self.mag_bin, self.active = mag_bin, active
        self.k = 0

    def __call__(self):
        b = self.encoded[self.k % len(self.encoded)]
        self.k += 1
        n = len(b)
        if self.mag_bin is None:
            return b, [self.size] * n
        return b, [self.size] * n, [self.mag_bin] * n, [self.active] * n


def _graph_stage(spec, source: _BatchSource, s: Settings, device_id: int | None, threads: int, repeats: int,
                 how: str):
    with quiet_dali():
        pipe = _stage_pipeline(source, spec, "cpu" if device_id is None else "mixed", batch_size=s.batch_size,
                               num_threads=threads, device_id=device_id, seed=s.seed + 11, prefetch_queue_depth=1)
        pipe.build()
    timed = record.measure(lambda: pipe.run(), repeats=repeats, **ALONE)
    last = pipe.run()[0]
    return {**timed, "how": how}, pipe, last


def stage_split(s: Settings, loader, delivered_ids: list, wall_s_per_batch: float, wait_s_per_batch: float,
                repeats: int = 3) -> dict:
    """The table in the module docstring, for row 1's ``loader`` (closed: its pipeline no longer runs)."""
    import dataclasses

    import torch

    from vitdata import kernels
    from vitdata.curriculum.schedule import magnitude_to_bin

    cfg = loader.cfg
    dali_size = cfg.image_size
    device_id = loader.dali_device_id
    threads = cfg.num_threads   # row 1's own DALI thread count
    ids = [int(i) for b in delivered_ids[:repeats + 1] for i in b.cpu().tolist()]
    batches = [ids[k * s.batch_size:(k + 1) * s.batch_size] for k in range(len(ids) // s.batch_size)]
    if not batches:
        return {"error": "no delivered batches to split"}
    reader = loader.reader
    where = "CPU operators" if device_id is None else f"GPU {device_id} (mixed decode)"
    out: dict = {"unit": "seconds per batch", "batch_size": s.batch_size, "dali_device_id": device_id,
                 "note": "each stage timed alone on the ids row 1 delivered, same thread count; stages overlap "
                         "in the loader, so they need not add up to the wall time"}

    encoded = [[reader.read(i) for i in b] for b in batches]
    k = iter(range(10 ** 9))
    out["read"] = {**record.measure(lambda: [reader.read(i) for i in batches[next(k) % len(batches)]], repeats=repeats,
                                      **ALONE),
                   "how": "SampleReader.read of the batch's ids, one thread (page cache warm)"}

    spec = loader.graph_spec                     # row 1's graph, as its backend built it
    max_ops = spec.max_ops
    mag = np.full(max_ops, magnitude_to_bin(cfg.augment.randaug_magnitude), np.int32)
    active = (np.arange(max_ops) < cfg.augment.randaug_num_ops).astype(np.int32)
    plain = dataclasses.replace(spec, randaug=False, hflip=0.0)
    out["decode"], pipe, _ = _graph_stage(
        plain, _BatchSource(encoded, dali_size), s, device_id, threads, repeats,
        f"train_graph without RandAugment and flip: decode + RRC, resize to {dali_size}, "
        f"{'normalise' if spec.normalize else 'uint8 out'}; {where}, "
        f"{threads} threads")
    del pipe
    out["graph"], pipe, result = _graph_stage(
        spec, _BatchSource(encoded, dali_size, mag, active), s, device_id, threads, repeats,
        f"train_graph as row 1 builds it: + RandAugment (n={cfg.augment.randaug_num_ops}, "
        f"m={cfg.augment.randaug_magnitude}) + flip; {where}, {threads} threads")
    dtype = torch.uint8 if not spec.normalize else torch.float16 if spec.float16 else torch.float32
    out["hand_over"] = {**record.measure(lambda: dali_to_torch(result, s, dtype), repeats=repeats, **ALONE),
                        "how": "one copy of the graph's output batch into a torch tensor on the device"}
    del result, pipe

    gen = torch.Generator().manual_seed(s.seed)
    p = cfg.augment.patch_size
    if spec.normalize:
        x = torch.randn(s.batch_size, 3, dali_size, dali_size, device=s.device)
        fused, what = {}, "a float32 batch"
    else:   # what the loader runs on a low-pass step: crop + normalise + dtype + layout in one pass
        x = torch.randint(0, 256, (s.batch_size, 3, dali_size, dali_size), dtype=torch.uint8, device=s.device)
        o = cfg.output
        fused = dict(mean=[255 * m for m in o.mean], std=[255 * v for v in o.std], out_dtype=getattr(torch, o.dtype),
                     memory_format=torch.channels_last if o.channels_last else torch.contiguous_format)
        what = f"a uint8 batch (normalise + {o.dtype} out fused)"

    def run_kernels():
        y = kernels.lowpass_crop(x, s.size, **fused)
        params = kernels.sample_patch_erase_params(s.batch_size, (s.size // p, s.size // p), 0.25, gen,
                                                   device=y.device)
        return kernels.patch_erase(y, params, p, "zero")

    out["kernels"] = {**record.measure(run_kernels, repeats=repeats, **ALONE),
                      "how": f"vitdata.kernels lowpass_crop {dali_size}->{s.size} + PatchErasing (0.25) on {what} "
                             f"on {x.device}"}
    out["loader_wall"] = {"median_s": wall_s_per_batch, "how": "row 1's median window time / steps"}
    out["consumer_wait"] = {"median_s": wait_s_per_batch,
                            "how": "time blocked in next(loader) per batch during row 1's windows (perf_counter)"}
    return out
