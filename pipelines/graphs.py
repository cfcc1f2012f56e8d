"""DALI graph builders for training and evaluation (the loader passes the device id: an int, or None for CPU).

The graph-building functions (:func:`train_graph`, :func:`eval_graph`) take DataNodes and return
DataNodes; :func:`build_pipeline` attaches the external source and wraps them in a ``@pipeline_def``.
One definition serves CPU and GPU: with CUDA the decoder runs as ``"mixed"`` (nvJPEG / nvImageCodec)
and every later op follows its input onto the GPU; without CUDA the pipeline is built with
``device_id=None`` (DALI refuses to build with a device id on a machine without a GPU, even for CPU
ops) and everything runs on CPU threads.

Outputs of :func:`build_pipeline` in order: images, label, id, orig_id, status. ``images`` is
(B, 3, H, W) ("CHW" layout) or (B, H, W, 3) ("HWC", for channels_last) float32 or float16,
normalised with ``mean``/``std`` given on the 0..255 scale; with ``GraphSpec.normalize`` False (a train
graph feeding the loader's low-pass crop) uint8 on the 0..255 scale, cropped, flipped and laid out the
same way but not normalised: the loader's kernel then normalises, crops and casts in one pass.
"""
from __future__ import annotations

import threading
import warnings
import weakref
from dataclasses import dataclass

from nvidia.dali import fn, pipeline_def, types

from . import randaug
from .source import CROP_OUTPUTS, OUTPUTS, SCALED_OUTPUTS
from vitdata.curriculum.schedule import NUM_MAG_BINS

# DALI's filter for each name of vitdata.loader.config.INTERPOLATIONS (the names a config may give).
_INTERP = {"bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC, "nearest": types.INTERP_NN,
           "lanczos": types.INTERP_LANCZOS3, "triangular": types.INTERP_TRIANGULAR}


@dataclass(frozen=True)
class GraphSpec:
    """What the graph needs to know when it is built (per-step values arrive through the source)."""
    train: bool = True
    scale: tuple[float, float] = (0.08, 1.0)     # random-resized-crop area fraction range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # random-resized-crop aspect ratio range
    hflip: float = 0.5                           # probability of a horizontal flip
    randaug: bool = True                         # build the RandAugment stage at all
    max_ops: int = 2                             # RandAugment op levels in the graph
    exclude_ops: tuple[str, ...] = ()            # RandAugment ops left out of the suite
    interpolation: str = "bilinear"
    randaug_interpolation: str = "nearest"       # RandAugment's warps: "nearest" or "bilinear"
    eval_size: int = 224                         # eval: output side
    eval_resize: int = 256                       # eval: shorter side before the centre crop
    mean: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
    std: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)
    float16: bool = False                        # fp16 out of DALI (else fp32); bf16 is converted in torch
    normalize: bool = True                       # False: uint8 out, not normalised (train graph feeding the
                                                 # loader's fused low-pass crop + normalise + cast)
    layout: str = "CHW"                          # "CHW" or "HWC" (channels_last after a permute)
    hw_decoder_load: float | None = None         # mixed decoder: share of JPEGs sent to the hardware
                                                 # decoder (None: DALI's default); ignored on CPU
    decode_scale: bool = False                   # train, CPU decode only: the source decodes plain JPEGs at
                                                 # 1/2, 1/4, 1/8 scale where the window allows, DALI the rest
    levels: bool = False                         # train: the source may hand a level's JPEG (vitdata.decode.
                                                 # levels) with the window's fractional bounds in it


def train_graph(encoded, size, mag_bin, active, spec: GraphSpec, decode_device: str, window=None):
    """Decode the crop window, resize it to ``size``, RandAugment, flip + normalise (flip only, uint8 out,
    with ``spec.normalize`` False): :func:`decode_window`, :func:`resize_window`, :func:`augment_graph`.

    ``window``: the source's crop outputs by name (``anchor``, ``shape``, and with ``spec.decode_scale``
    ``decoded``, ``hwc``, ``roi_start``, ``roi_end``; see ``pipelines.source``): the window drawn outside
    the graph, decoded by ``decoders.image_slice``, or already decoded at reduced scale by the source. None:
    DALI draws the window itself (``decoders.image_random_crop``, its own random stream)."""
    if window is None:
        images = fn.decoders.image_random_crop(encoded, device=decode_device, output_type=types.RGB,
                                               random_area=list(spec.scale), random_aspect_ratio=list(spec.ratio),
                                               num_attempts=10, **_decoder_kw(spec, decode_device))
        images = fn.resize(images, size=size, interp_type=_INTERP[spec.interpolation], antialias=True)
    else:
        images = resize_window(decode_window(encoded, window, spec, decode_device), size, window, spec)
    return augment_graph(images, size, mag_bin, active, spec)


def decode_window(encoded, window, spec: GraphSpec, decode_device: str):
    """The window's pixels (HWC uint8): DALI's ROI decode of the window (absolute pixels, after EXIF
    orientation), or, per sample with ``spec.decode_scale``, the pixels the source decoded at reduced scale
    around it (a conditional: the two branches merge into one batch)."""
    if not spec.decode_scale:
        return _slice(encoded, window, spec, decode_device)
    if window["decoded"] == 1:
        images = fn.reshape(encoded, shape=window["hwc"], layout="HWC")
    else:
        images = _slice(encoded, window, spec, decode_device)
    return images


def resize_window(images, size, window, spec: GraphSpec):
    """Resize :func:`decode_window`'s pixels to ``size``; with ``spec.decode_scale`` or ``spec.levels`` over each
    sample's ``roi_start``..``roi_end`` (the window's fractional bounds in a reduced decode or a level, the
    whole slice else)."""
    roi = {}
    if spec.decode_scale or spec.levels:
        roi = {"roi_start": window["roi_start"], "roi_end": window["roi_end"], "roi_relative": False}
    return fn.resize(images, size=size, interp_type=_INTERP[spec.interpolation], antialias=True, **roi)


def augment_graph(images, size, mag_bin, active, spec: GraphSpec):
    """RandAugment (with ``spec.randaug``), flip and normalise (or flip only, uint8) of resized images."""
    if spec.randaug:
        images = randaug.apply(images, mag_bin, active, size, max_ops=spec.max_ops, num_bins=NUM_MAG_BINS,
                               exclude=spec.exclude_ops, interp_type=_INTERP[spec.randaug_interpolation])
    mirror = fn.random.coin_flip(probability=spec.hflip) if spec.hflip > 0 else 0
    return _normalise(images, spec, mirror)


def _slice(encoded, window, spec: GraphSpec, decode_device: str):
    return fn.decoders.image_slice(encoded, window["anchor"], window["shape"], device=decode_device,
                                   output_type=types.RGB, normalized_anchor=False, normalized_shape=False,
                                   **_decoder_kw(spec, decode_device))


def eval_graph(encoded, spec: GraphSpec, decode_device: str):
    """Decode, resize the shorter side to ``eval_resize``, centre-crop ``eval_size``, normalise."""
    images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB,
                               **_decoder_kw(spec, decode_device))
    images = fn.resize(images, resize_shorter=spec.eval_resize, interp_type=_INTERP[spec.interpolation],
                       antialias=True)
    return _normalise(images, spec, 0, crop=(spec.eval_size, spec.eval_size))


def _decoder_kw(spec: GraphSpec, decode_device: str) -> dict:
    if decode_device == "mixed" and spec.hw_decoder_load is not None:
        return {"hw_decoder_load": float(spec.hw_decoder_load)}
    return {}


def _normalise(images, spec: GraphSpec, mirror, crop=None):
    kw = {} if crop is None else {"crop": crop, "crop_pos_x": 0.5, "crop_pos_y": 0.5}
    if not spec.normalize:   # flip and layout only; mean 0, std 1 keeps the uint8 values exact
        return fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout=spec.layout, mirror=mirror, **kw)
    return fn.crop_mirror_normalize(images, dtype=types.FLOAT16 if spec.float16 else types.FLOAT,
                                    output_layout=spec.layout, mean=list(spec.mean), std=list(spec.std),
                                    mirror=mirror, **kw)


_DTYPES = {"encoded": types.UINT8, "label": types.INT64, "id": types.INT64, "orig_id": types.INT64,
           "status": types.INT32, "size": types.FLOAT, "mag_bin": types.INT32, "active": types.INT32,
           "anchor": types.INT32, "shape": types.INT32, "decoded": types.INT32, "hwc": types.INT32,
           "roi_start": types.FLOAT, "roi_end": types.FLOAT}
_NDIM = {"label": 0, "id": 0, "orig_id": 0, "status": 0, "decoded": 0}   # every other output is 1-D


@pipeline_def(enable_conditionals=True, enable_checkpointing=True)
def _pipeline(source, spec: GraphSpec, decode_device: str, parallel: bool, inputs: list):
    names = source_outputs(spec)
    outs = fn.external_source(
        source=source, num_outputs=len(names), batch=not parallel, parallel=parallel,
        **({} if parallel else {"batch_info": True}),
        dtype=[_DTYPES[n] for n in names], ndim=[_NDIM.get(n, 1) for n in names])
    inputs[:] = [o.name for o in outs]   # the input names a deserialized copy of the graph is fed by
    node = dict(zip(names, outs))
    if spec.train:
        window = {k: node[k] for k in CROP_OUTPUTS + SCALED_OUTPUTS if k in node}
        images = train_graph(node["encoded"], node["size"], node.get("mag_bin"), node.get("active"), spec,
                             decode_device, window)
    else:
        images = eval_graph(node["encoded"], spec, decode_device)
    return images, node["label"], node["id"], node["orig_id"], node["status"]


def source_outputs(spec: GraphSpec) -> tuple[str, ...]:
    """Names of ``source.OUTPUTS`` the graph reads, in order (the source returns only those): eval the first
    five; train adds the step's size, RandAugment's knobs when it runs, the crop window, and the reduced
    decode's outputs with ``spec.decode_scale`` (the window's fractional bounds alone with ``spec.levels``)."""
    if not spec.train:
        return OUTPUTS[:5]
    roi = SCALED_OUTPUTS if spec.decode_scale else SCALED_OUTPUTS[2:] if spec.levels else ()
    return (OUTPUTS[:8] if spec.randaug else OUTPUTS[:6]) + CROP_OUTPUTS + roi


def num_source_outputs(spec: GraphSpec) -> int:
    """How many outputs the source returns for ``spec`` (see :func:`source_outputs`)."""
    return len(source_outputs(spec))


def build_pipeline(source, spec: GraphSpec, *, batch_size: int, num_threads: int, device_id: int | None,
                   py_num_workers: int, py_start_method: str, prefetch: int, seed: int,
                   checkpoint: bytes | str | None = None, start_timeout: float = 120.0):
    """Build (not yet run) the train or eval pipeline around ``source`` (an ``EpochSource``).

    The pipeline's ``vitdata_inputs`` lists the names of its external source's outputs, in
    :func:`source_outputs` order: a copy of the graph made by ``Pipeline.deserialize_and_build`` from
    ``pipe.serialize()`` takes them by ``feed_input`` (``vitdata.loader.backends.dali_redo``).

    ``py_num_workers`` > 0 runs the source in that many worker processes (DALI's parallel external
    source); 0 calls it in the thread that runs the pipeline, which saves the inter-process copies
    where the source is cheap next to decoding (a few 100 us per sample here). Workers that do not report
    ready within ``start_timeout`` seconds are killed and started once more, then a WorkerError is raised
    (see :func:`_start_workers`)."""
    decode_device = "cpu" if device_id is None else "mixed"
    with warnings.catch_warnings():
        # DALI's RandAugment suite calls deprecated fn.experimental aliases when the graph is built.
        warnings.filterwarnings("ignore", message=r"(?s).*fn\.experimental\..*deprecated", category=DeprecationWarning)
        return _build(source, spec, decode_device, batch_size=batch_size, num_threads=num_threads,
                      device_id=device_id, py_num_workers=py_num_workers, py_start_method=py_start_method,
                      prefetch=prefetch, seed=seed, checkpoint=checkpoint, start_timeout=start_timeout)


def _build(source, spec, decode_device, *, batch_size, num_threads, device_id, py_num_workers, py_start_method,
           prefetch, seed, checkpoint, start_timeout):
    workers = {"py_num_workers": py_num_workers, "py_start_method": py_start_method} if py_num_workers > 0 else {}

    inputs: list[str] = []

    def make():
        return _pipeline(source, spec, decode_device, py_num_workers > 0, inputs, batch_size=batch_size,
                         num_threads=num_threads, device_id=device_id, prefetch_queue_depth=prefetch, seed=seed,
                         checkpoint=checkpoint, **workers)

    pipe = make()
    if py_num_workers > 0:
        for attempt in (1, 2):
            hung = _start_workers(pipe, start_timeout)
            if hung is None:
                break
            del pipe
            if attempt == 2:
                from vitdata.errors import WorkerError

                raise WorkerError(
                    f"DALI source workers ({py_num_workers}, started with {py_start_method!r}) did not report ready "
                    f"within {start_timeout:.0f} s, twice; killed pids {hung}. A worker that hangs while starting is "
                    f"most often a fork taken while another thread of this process held a lock: try "
                    f"start_method='spawn' or num_workers=0.", pids=hung)
            warnings.warn(f"DALI source workers did not start within {start_timeout:.0f} s (killed pids {hung}); "
                          f"starting them once more", RuntimeWarning, stacklevel=4)
            pipe = make()
    pipe.build()
    pipe.vitdata_inputs = tuple(inputs)
    return pipe


def _start_workers(pipe, timeout: float) -> list[int] | None:
    """Start the pipeline's source workers, watched: None once every worker has reported ready, else the
    pids killed after ``timeout`` seconds without that.

    DALI waits for the workers' ready messages with no time limit, so a child that deadlocks before it
    sends one (a fork taken while another thread held a lock the child then needs) hangs the trainer.
    Here the start runs in a helper thread; when it overruns, the children it started are killed, DALI's
    pool observer sees them exit and the start fails instead of waiting forever."""
    import multiprocessing
    import threading

    before = {p.pid for p in multiprocessing.active_children()}
    failure: list[BaseException] = []

    def start():
        try:
            pipe.start_py_workers()
        except BaseException as e:   # noqa: B036 -- handed to the caller's thread below
            failure.append(e)

    t = threading.Thread(target=start, name="vitdata-start-workers", daemon=True)
    t.start()
    t.join(timeout)
    if not t.is_alive():
        if failure:
            raise failure[0]
        return None
    killed = []
    for proc in multiprocessing.active_children():
        if proc.pid not in before:
            proc.kill()
            killed.append(proc.pid)
    t.join(30)
    return killed


# pipeline -> its run() still on a helper thread after the caller stopped waiting for it (see run_watched)
_PENDING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Run:
    """One ``pipe.run()`` on a daemon thread; ``done`` is set when it returned (``out``) or raised (``err``)."""

    def __init__(self, pipe):
        self.done = threading.Event()
        self.out = self.err = None
        self.thread = threading.Thread(target=self._target, args=(pipe,), name="vitdata-dali-run", daemon=True)
        self.thread.start()

    def _target(self, pipe):
        try:
            self.out = pipe.run()
        except BaseException as e:   # noqa: B036 -- re-raised in the caller's thread by run_watched
            self.err = e
        finally:
            self.done.set()


def run_watched(pipe, dead_workers, poll: float = 0.05):
    """``pipe.run()`` of a pipeline with source workers: its outputs, or what it raised, or a RuntimeError
    within ``poll`` seconds of ``dead_workers()`` (the workers that exited, as a non-empty list) reporting
    one while the run has not returned.

    Why a helper thread: DALI hands each batch's tasks to its workers through a shared-memory queue whose
    ``multiprocessing.Condition.notify`` waits, with no time limit, for a sleeping worker to wake. A worker
    killed while it slept (SIGKILL, the OOM killer) is still counted as a sleeper, and DALI's pool observer
    terminates the other workers as soon as one dies, so a ``run()`` that receives a batch finished before
    the death and then schedules the next one blocks for ever in ``pool.send``. Under load on 2 cores that
    happened in about one run in two. Nothing interrupts a wait on a semaphore from outside, so the run goes
    on a daemon thread and the caller stops waiting: a run stuck that way stays parked on its thread (with
    its pipeline) until the process exits. A run that a caller stopped waiting for in any other way (an
    interrupt) is collected by the next call on the same pipeline, so no batch is lost or run twice."""
    run = _PENDING.pop(pipe, None) or _Run(pipe)
    _PENDING[pipe] = run
    while not run.done.wait(poll):
        dead = dead_workers()
        if dead:
            raise RuntimeError(f"source worker {', '.join(str(p) for p, _ in dead)} exited while the step's run() "
                               f"waited on the workers; the run was abandoned")
    del _PENDING[pipe]
    if run.err is not None:
        raise run.err
    return run.out


def build_probe(spec: GraphSpec, device_id: int | None):
    """A one-sample pipeline that decodes encoded bytes fed as input ``"encoded"`` with the graph's decoder
    kind: ``"cpu"`` on the CPU, ``"mixed"`` (nvImageCodec on the GPU, the same ``hw_decoder_load``) with a
    device, RGB output like the graph. Used on the error path only, to find which sample of a failed
    step the decoder refuses (``vitdata.loader.quarantine``); full decode, so it refuses at least what the
    graph's cropping decoder refuses. Run it with ``probe_decodes``."""
    decode_device = "cpu" if device_id is None else "mixed"

    # DALI's default executor: a run that failed leaves the pipeline usable for the next sample (the
    # non-pipelined executor fails every later run too)
    @pipeline_def(batch_size=1, num_threads=1, device_id=device_id, prefetch_queue_depth=1)
    def probe():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        return fn.decoders.image(encoded, device=decode_device, output_type=types.RGB,
                                 **_decoder_kw(spec, decode_device))

    pipe = probe()
    pipe.build()
    return pipe


def probe_decodes(pipe, data: bytes) -> None:
    """Decode ``data`` in a :func:`build_probe` pipeline; raises what DALI raises when the decoder refuses
    it (the pipeline stays usable)."""
    import numpy as np

    pipe.feed_input("encoded", [np.frombuffer(data, np.uint8)])
    pipe.run()
