"""The DALI backend: the graphs of ``vitdata.pipelines`` fed by the loader's per-epoch control.

Each loader epoch is one DALI epoch: the parallel external source maps ``SampleInfo.idx_in_epoch`` to
the sampler's id through that epoch's control file, so the DALI iterations consumed equal the steps
the loader handed over, and a checkpoint taken between ``run()`` calls holds consumed batches only. The
DALI epoch in progress is one :class:`DaliEpoch`.

How ``start(control, epoch, position)`` gets its pipeline, one named path each:

- :meth:`DaliBackend._resume_saved`: a restored checkpoint of this epoch at this position: the
  pipeline is rebuilt from it (bit-exact);
- :meth:`DaliBackend._continue_by_reset`: the current pipeline consumed its whole epoch (or a restored
  checkpoint was taken there), position 0: it moves on by a reset, so the augmentation RNG stream
  continues as in one uninterrupted run;
- :meth:`DaliBackend._fresh_build`: otherwise a new pipeline, seeded from (seed, rank, epoch), whose
  epoch is the steps from ``position`` on (position > 0 after a world-size change: fresh augmentation draws).

Quarantine and redo (``vitdata.loader.quarantine``): a ``run()`` that fails in the decoder keeps its
pipeline. The sample DALI names (or, failing that, each sample of the step) is probed, the refused ids are
quarantined (the next DALI epoch's control file carries them, so the source substitutes them before
reading), and the failed step alone is produced again by a copy of the graph restored from the random
state before it (``vitdata.loader.backends.dali_redo``): no rebuild, no replay, no re-trace. A checkpoint
is kept every ``LoaderConfig.checkpoint_every`` steps (about 0.2 ms each on a CPU with the RandAugment
graph): between a failure and the next good step the pipeline's own checkpoint is not a state to save, and
a state taken then is that checkpoint and the steps to replay from it.

A source worker that dies is reported as a :class:`~vitdata.errors.WorkerError` naming its pid: the
worker processes are the children this process gained while the pipeline was built
(``multiprocessing.active_children()`` before and after), watched through their ``exitcode``.
"""
from __future__ import annotations

import base64
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from vitdata.errors import DataError, StateError, WorkerError
from vitdata.loader.backends.base import Backend, BackendContext, RawBatch, control_tail, start_method
from vitdata.loader.config import graph_max_ops

# Redos one step may need (a substitute that the decoder refuses too is found on the next round).
MAX_REDOS = 8
# Redo attempts guided by the sample DALI names; later ones probe every sample of the step (one pass finds
# all that remain, where each guided attempt finds one: a large batch may hold several bad files).
GUIDED_REDOS = 2


@dataclass(eq=False)
class DaliEpoch:
    """The DALI epoch the pipeline runs: the loader epoch it serves, where it begins and stands, and what
    a replay starts from."""
    epoch: int                 # the loader epoch the pipeline serves
    dali_epoch: int            # DALI's SampleInfo.epoch_idx of it
    offset: int                # loader step at which the DALI epoch begins
    control: dict              # its control from `offset` on (the source reads the quarantine from it)
    done: int = 0              # steps of it delivered
    replay_from: tuple = (None, 0)      # (a checkpoint of the pipeline taken before a good step, steps done at it)
    failed: DataError | None = None     # the failure that left no pipeline (no probe could pin it on one sample)
    seen: frozenset = frozenset()       # the quarantine its control carries (what the source substitutes)
    after_redo: bytes | None = None     # the redo's checkpoint while the pipeline's last run() failed

    @property
    def ids(self) -> np.ndarray:
        """The DALI epoch's ids (names samples in errors)."""
        return self.control["ids"]

    @property
    def samples(self) -> int:
        return len(self.control["ids"])

    def at_end(self, batch_size: int) -> bool:
        """Whether every step of the DALI epoch was delivered."""
        return self.done * batch_size >= self.samples

    def state(self, checkpoint: bytes) -> dict:
        return {"checkpoint": base64.b64encode(checkpoint).decode("ascii"), "dali_epoch": self.dali_epoch,
                "epoch": self.epoch, "offset": self.offset, "done": self.done, "samples": self.samples}


class DaliBackend(Backend):
    """See the module docstring. ``state()``: the DALI checkpoint (base64 text) with the DALI epoch it
    belongs to, the loader epoch, the step the DALI epoch begins at (``offset``), the steps of it
    delivered (``done``) and its length in samples."""

    name = "dali"

    def __init__(self, ctx: BackendContext, device_id: int | None, hw_decoder_load: float | None = None):
        from vitdata.pipelines.graphs import GraphSpec

        self.ctx = ctx
        self.device_id = device_id
        cfg = ctx.cfg
        a, o = cfg.augment, cfg.output
        self.max_ops = graph_max_ops(a)
        eval_size = cfg.eval.image_size or cfg.image_size
        self.spec = GraphSpec(train=ctx.train, scale=tuple(a.scale), ratio=tuple(a.ratio), hflip=a.hflip,
                              randaug=a.randaug and ctx.train, max_ops=self.max_ops,
                              exclude_ops=tuple(a.randaug_exclude), interpolation=a.interpolation,
                              randaug_interpolation=a.randaug_interpolation, eval_size=eval_size,
                              eval_resize=int(round(eval_size / cfg.eval.crop_pct)),
                              mean=tuple(255.0 * m for m in o.mean), std=tuple(255.0 * s for s in o.std),
                              float16=o.dtype == "float16", layout="HWC" if o.channels_last else "CHW",
                              normalize=not (ctx.train and ctx.uint8_images),
                              hw_decoder_load=hw_decoder_load if device_id is not None else None,
                              # DALI 2.4 decodes at full scale only: with decode_scale "on" the source decodes
                              # reduced JPEGs on a CPU-only host; with a GPU nvJPEG decodes everything
                              decode_scale=cfg.decode_scale == "on" and ctx.train and device_id is None,
                              levels=ctx.levels is not None and ctx.train)
        self.pipe = None
        self.workers: list = []      # the pipeline's source worker processes (multiprocessing.Process)
        self.current: DaliEpoch | None = None   # the DALI epoch the pipeline runs
        self._restored = None        # a state from restore(), resumed by the next start()
        self._probe = None           # dali_redo.Probe: the one-sample decode pipeline (error path only)
        self._twin = None            # dali_redo.Twin of the graph (error path only)
        self._redo_source = None     # an EpochSource of this process, for the redo's inputs (error path only)
        self.generation = 0          # pipelines built so far; each reads its control files from its own ctl_dir
        self.root = tempfile.mkdtemp(prefix="vitdata-ctl-")
        self.ctl_dir = None

    # -- the interface ---------------------------------------------------------------------------------
    def start(self, control: dict, epoch: int, position: int) -> None:
        b = self.ctx.batch_size
        saved, self._restored = self._restored, None
        if saved is not None and _at_end(saved, b):
            self._rebuild_finished(saved)   # the saved epoch is over: the reset below moves on from it
            saved = None
        if saved is not None and int(saved.get("epoch", epoch)) == epoch \
                and int(saved.get("offset", 0)) + int(saved.get("done", position)) == position:
            self.current = self._resume_saved(saved, control, epoch, position)
        elif position == 0 and self.pipe is not None and self.current.at_end(b):
            self.current = self._continue_by_reset(control, epoch)
        else:
            self.current = self._fresh_build(control, epoch, position)

    def next(self) -> RawBatch:
        run = self.current
        if self.pipe is None and run.failed is not None:
            # Not a DataError: a loop that catches DataError and goes on must not spin on this one.
            raise RuntimeError(f"the DALI pipeline stopped at an earlier failure that no decoder probe could pin on "
                               f"one sample ({run.failed}); rebuild the loader or load_state_dict a saved state")
        if run.done % self.ctx.cfg.checkpoint_every == 0 and run.done and run.replay_from[1] != run.done \
                and run.after_redo is None:
            run.replay_from = (bytes(self.pipe.checkpoint()), run.done)
        try:
            if self.ctx.cfg.num_workers:   # a dead source worker can block DALI's run() for ever: watched
                from vitdata.pipelines.graphs import run_watched

                outs = run_watched(self.pipe, self._dead_workers)
            else:
                outs = self.pipe.run()
        except StopIteration:
            raise
        except Exception as e:
            outs = self._recover(e)
        else:
            run.after_redo = None
        run.done += 1
        images, label, sid, orig, status = outs
        return RawBatch(self._to_torch(images), np.array(label.as_tensor()), np.array(sid.as_tensor()),
                        np.array(orig.as_tensor()), np.array(status.as_tensor()), self.spec.layout)

    def state(self) -> dict:
        if self.pipe is None:
            return dict(self._restored) if self._restored else {}
        run = self.current
        if run.after_redo is None:
            return run.state(bytes(self.pipe.checkpoint()))
        # the pipeline's checkpoint is not a state until its next step succeeds (see dali_redo)
        ck, at = run.replay_from
        return dict(run.state(ck), replay=run.done - at)

    def restore(self, state: dict | None) -> None:
        if state is not None and not state.get("checkpoint"):
            raise StateError("loader state has no DALI checkpoint (field backend.checkpoint)")
        self.close_pipe()
        self.current = None
        self._restored = None if state is None else dict(state)

    def close(self) -> None:
        self.close_pipe()
        self._probe = self._twin = self._redo_source = None
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the three ways to start an epoch --------------------------------------------------------------
    def _resume_saved(self, saved: dict, control: dict, epoch: int, position: int) -> DaliEpoch:
        """Rebuild the pipeline from a restored checkpoint of ``epoch`` taken at ``position`` (bit-exact)."""
        offset = int(saved.get("offset", 0))
        run = DaliEpoch(epoch, int(saved["dali_epoch"]), offset, control_tail(control, offset, self.ctx.batch_size),
                        done=position - offset)
        self._new_generation()
        self._write_control(run)
        ck = _b64(saved["checkpoint"])
        self._build_saved(ck)
        replay = int(saved.get("replay") or 0)   # a state taken right after a redo: steps past the checkpoint
        for _ in range(replay):
            self.pipe.run()
        run.replay_from = (ck, run.done - replay)
        return run

    def _continue_by_reset(self, control: dict, epoch: int) -> DaliEpoch:
        """Move the pipeline, its epoch consumed, on to the next DALI epoch (the RNG stream continues)."""
        try:
            self.pipe.run()   # every batch consumed: the source signals the end now
            raise RuntimeError("DALI pipeline produced a batch past the end of the epoch")
        except StopIteration:
            pass
        run = DaliEpoch(epoch, self.current.dali_epoch + 1, 0, control)
        self._write_control(run)
        self.pipe.reset()
        run.replay_from = (bytes(self.pipe.checkpoint()), 0)
        return run

    def _fresh_build(self, control: dict, epoch: int, position: int) -> DaliEpoch:
        """A new pipeline seeded from (seed, rank, epoch), its DALI epoch the steps from ``position`` on."""
        run = DaliEpoch(epoch, 0, position, control_tail(control, position, self.ctx.batch_size))
        self._new_generation()
        self._write_control(run)
        self._build(None, epoch)
        run.replay_from = (bytes(self.pipe.checkpoint()), 0)
        return run

    def _rebuild_finished(self, saved: dict) -> None:
        """Rebuild the pipeline from the checkpoint of a fully consumed epoch, so the next start moves on
        by a reset. The source reads only the length of that epoch's control (every position is past its
        end), so a placeholder of the saved length stands in for it."""
        n = int(saved.get("samples") or 0)
        if n <= 0:
            raise StateError("loader state at an epoch boundary has no DALI checkpoint of the finished epoch "
                             "(fields backend.checkpoint, backend.samples)")
        steps = max(1, n // self.ctx.batch_size)
        placeholder = {"ids": np.full(n, -1, np.int64), "extra_magnitude": np.zeros(n, np.float32),
                       "step_size": np.zeros(steps, np.int32), "step_magnitude": np.zeros(steps, np.float32),
                       "step_num_ops": np.zeros(steps, np.int32), "epoch": np.array(-1, np.int64)}
        run = DaliEpoch(int(saved.get("epoch", 0)), int(saved["dali_epoch"]), 0, placeholder,
                        done=n // self.ctx.batch_size)
        self._new_generation()
        self._write_control(run, quarantine=False)
        self._build_saved(_b64(saved["checkpoint"]))
        self.current = run

    # -- pipelines -------------------------------------------------------------------------------------
    def close_pipe(self) -> None:
        if self.pipe is not None:
            pipe, self.pipe = self.pipe, None
            del pipe
        self.workers = []
        self._twin = None   # a copy of that pipeline's graph

    def _new_generation(self) -> None:
        self.generation += 1
        self.ctl_dir = os.path.join(self.root, f"gen{self.generation}")
        os.makedirs(self.ctl_dir, exist_ok=True)

    def _build(self, checkpoint: bytes | None, seed_epoch: int) -> None:
        import multiprocessing

        from vitdata.pipelines.graphs import build_pipeline, source_outputs
        from vitdata.pipelines.source import EpochSource

        self.close_pipe()
        ctx, cfg = self.ctx, self.ctx.cfg
        source = EpochSource(ctx.reader, ctx.index, self.ctl_dir, ctx.batch_size, self.max_ops, cfg.max_pixels,
                             source_outputs(self.spec), self._crop())
        seed = int(np.random.SeedSequence([cfg.seed, ctx.rank, seed_epoch, 0x0DA1]).generate_state(1)[0] & 0x7FFFFFFF)
        # The source workers are the children this process gains while the pipeline is built.
        before = set(multiprocessing.active_children())
        self.pipe = build_pipeline(source, self.spec, batch_size=ctx.batch_size, num_threads=cfg.num_threads,
                                   device_id=self.device_id, py_num_workers=cfg.num_workers,
                                   py_start_method=start_method(cfg), prefetch=cfg.prefetch, seed=seed,
                                   checkpoint=checkpoint, start_timeout=cfg.worker_start_timeout)
        self.workers = [p for p in multiprocessing.active_children() if p not in before] if cfg.num_workers else []

    def _crop(self):
        """The source's CropSpec (train), or None (eval: DALI's centre crop)."""
        from vitdata.pipelines.source import CropSpec

        ctx, cfg = self.ctx, self.ctx.cfg
        a = cfg.augment
        return CropSpec(tuple(a.scale), tuple(a.ratio), cfg.seed, ctx.rank, self.spec.decode_scale,
                        cfg.num_threads, ctx.levels) if ctx.train else None

    def _build_saved(self, checkpoint: bytes) -> None:
        """Build from a saved state's checkpoint; DALI's refusal of it is the state's fault (StateError)."""
        from vitdata.errors import VitdataError

        try:
            self._build(checkpoint, 0)
        except VitdataError:
            raise
        except (RuntimeError, ValueError) as e:
            self.close_pipe()
            raise StateError(f"DALI refused the loader state's checkpoint: {str(e).strip().splitlines()[0][:200]} "
                             f"(field backend.checkpoint)") from e

    def _write_control(self, run: DaliEpoch, quarantine: bool = True) -> None:
        """The control file of ``run``'s DALI epoch in the current generation (with the quarantine's ids,
        which the source substitutes before reading)."""
        from vitdata.pipelines.source import control_path, write_control

        control, q = run.control, self.ctx.quarantine
        run.seen = q.ids() if quarantine and q is not None else frozenset()
        if run.seen:
            control = dict(control, quarantine=np.array(sorted(run.seen), np.int64))
        write_control(control_path(self.ctl_dir, run.dali_epoch), control)

    # -- quarantine and redo ----------------------------------------------------------------------------
    def _recover(self, exc: BaseException):
        """The outputs of the step whose ``run()`` raised ``exc``: quarantine what the decoder refuses and
        produce the step again in a copy of the graph (``dali_redo``); raise when the failure is not a
        decoder's, or no probe pins it on a sample."""
        from vitdata.loader.backends.dali_redo import failed_sample

        run, b = self.current, self.ctx.batch_size
        step_ids = run.ids[run.done * b:(run.done + 1) * b]
        dead = self._dead_workers()
        err = None if dead else self._source_error(exc)
        if dead or err is not None or self.ctx.quarantine is None:
            self.close_pipe()
            if dead:
                raise self._worker_error(dead, step_ids, exc) from exc
            run.failed = err or self._decode_error(step_ids, exc)
            raise run.failed from exc
        # the random state before the step: after a failed run() the pipeline's checkpoint still holds it
        before = run.after_redo or bytes(self.pipe.checkpoint())
        seen = run.seen   # the quarantine the failed batch was resolved with
        for attempt in range(MAX_REDOS):
            hint = failed_sample(exc) if attempt < GUIDED_REDOS else None
            refused = self._probe_step(hint, seen)
            if not refused and not attempt and run.after_redo is not None and run.replay_from[0] is not None:
                return self._rebuild_and_replay(run)
            if not refused:
                break
            for sid, words in refused:
                self.ctx.quarantine.add(sid, words, path=self.ctx.index.describe(sid), epoch=run.epoch)
            seen = self.ctx.quarantine.ids()
            try:
                inputs = self._redo_inputs(run, seen)
            except DataError as e:   # no usable substitute left: the step cannot be delivered
                self.close_pipe()
                run.failed = e
                raise
            try:
                outs, run.after_redo = self._twin.run(before, inputs)
                return outs
            except Exception as e:
                exc = e
        self.close_pipe()
        run.failed = self._decode_error(step_ids, exc)
        raise run.failed from exc

    def _rebuild_and_replay(self, run: DaliEpoch):
        """The step after a redo failed with no sample to blame: the pipeline did not survive the failure
        before it (a DALI build or device where a failed ``run()`` ends the pipeline). Rebuild it from the
        last good checkpoint and replay up to this step, the quarantine's files substituted: one rebuild
        and re-trace, as every failure cost before the redo."""
        ck, at = run.replay_from
        self._new_generation()
        self._write_control(run)
        self._build(ck, 0)
        for _ in range(run.done - at):
            self.pipe.run()
        run.after_redo = None
        return self.pipe.run()

    def _redo_inputs(self, run: DaliEpoch, quarantine: frozenset) -> tuple:
        """The source's outputs of ``run``'s current step with ``quarantine`` substituted (a DataError when
        no usable substitute is left, as from the source)."""
        from vitdata.loader.backends.dali_redo import Twin
        from vitdata.pipelines.source import EpochSource

        ctx, cfg = self.ctx, self.ctx.cfg
        if self._twin is None:
            self._twin = Twin(self.pipe, batch_size=ctx.batch_size, num_threads=cfg.num_threads,
                              device_id=self.device_id)
        if self._redo_source is None:
            from vitdata.pipelines.graphs import source_outputs

            self._redo_source = EpochSource(ctx.reader, ctx.index, self.ctl_dir, ctx.batch_size, self.max_ops,
                                            cfg.max_pixels, source_outputs(self.spec), self._crop())
        return self._redo_source.step_outputs(run.control, run.done, quarantine)

    def _probe_step(self, hint: int | None, seen: frozenset) -> list[tuple[int, str]]:
        """(id, decoder's words) of the samples of the failed step that the decoder refuses: the one at batch
        place ``hint`` (resolved with quarantine ``seen``, as the failed batch was) when DALI named it and the
        probe refuses it, else each sample the step delivers now."""
        b, run = self.ctx.batch_size, self.current
        first = run.done * b
        if hint is not None and first + hint < run.samples:
            refused = self._probe_positions([first + hint], seen)
            if refused:
                return refused
        return self._probe_positions(range(first, min(first + b, run.samples)), self.ctx.quarantine.ids())

    def _probe_positions(self, positions, quarantine: frozenset) -> list[tuple[int, str]]:
        from vitdata.loader.backends.dali_redo import Probe

        if self._probe is None:
            self._probe = Probe(self.spec, self.device_id)
        return self._probe.refused(self.ctx, self.current.ids, positions, quarantine)

    def _source_error(self, exc: BaseException) -> DataError | None:
        """The source's own DataError behind a failed ``run()`` (DALI chains the in-thread source's
        object; a worker's comes back by record, see ``pipelines.source.write_error_record``), else None."""
        from vitdata.pipelines.source import read_error_records

        seen = exc
        while seen is not None:
            if isinstance(seen, DataError):
                return seen
            seen = seen.__cause__ or seen.__context__
        records = read_error_records(self.ctl_dir, self.current.dali_epoch) if self.ctl_dir else []
        if records:
            # the earliest failed position: prefetch may have asked workers for later samples already
            e = records[0][1]
            return DataError(e.reason, e.path, sample_id=e.sample_id, offset=e.offset,
                             detail=f"{e.detail} ({self.ctx.split} epoch {self.current.epoch}, rank {self.ctx.rank})")
        return None

    def _to_torch(self, tl) -> torch.Tensor:
        dev = self.ctx.device
        if self.device_id is None:
            t = torch.from_numpy(np.array(tl.as_tensor()))
            return t.to(dev, non_blocking=True) if dev.type != "cpu" else t
        # GPU: copy DALI's buffer into a torch tensor on the consumer's current stream, ordered after
        # DALI's work by DALI's own event; the trainer's kernels on that stream then wait for it.
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dt = tl.as_tensor()
        dtype = torch.uint8 if not self.spec.normalize else torch.float16 if self.spec.float16 else torch.float32
        out = torch.empty(dt.shape(), dtype=dtype, device=dev)
        feed_ndarray(dt, out, cuda_stream=torch.cuda.current_stream(dev))
        return out

    # -- errors ----------------------------------------------------------------------------------------
    def _where(self) -> str:
        run = self.current
        return f"{self.ctx.split} epoch {run.epoch} step {run.offset + run.done} (rank {self.ctx.rank})"

    def _dead_workers(self) -> list[tuple[int, str]]:
        """(pid, how it ended) of the pipeline's source workers that are no longer running."""
        dead = []
        for proc in self.workers:
            code = proc.exitcode
            if code is not None:
                dead.append((proc.pid, f"killed by signal {-code}" if code < 0 else f"exit code {code}"))
        return dead

    def _worker_error(self, dead, step_ids: np.ndarray, exc: BaseException) -> WorkerError:
        ids = [int(i) for i in step_ids if i >= 0]
        describe = self.ctx.index.describe
        said = str(exc).strip()
        return WorkerError(
            f"DALI source worker {', '.join(f'pid {p} ({why})' for p, why in dead)} died while preparing "
            f"{self._where()}; the step's sample ids: {ids} "
            f"({', '.join(describe(i) for i in ids[:4])}{' ...' if len(ids) > 4 else ''}). "
            f"DALI said: {said.splitlines()[-1][:200] if said else type(exc).__name__}",
            pids=[p for p, _ in dead], sample_ids=ids)

    def _decode_error(self, step_ids: np.ndarray, exc: BaseException) -> DataError:
        """A DataError naming the step's samples, for a failure in DALI that no probe could pin on one."""
        ids = [int(i) for i in step_ids if i >= 0]
        paths = ", ".join(self.ctx.index.describe(i) for i in ids[:8]) + (" ..." if len(ids) > 8 else "")
        msg = str(exc).strip().splitlines()
        first = next((line for line in msg if "rror" in line), msg[0] if msg else type(exc).__name__)
        run = self.current
        return DataError("decode_error", paths, detail=f"a sample of {self.ctx.split} epoch {run.epoch} step "
                         f"{run.offset + run.done} (rank {self.ctx.rank}, ids {ids}) failed in DALI: {first[:300]}")


def _b64(text) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (TypeError, ValueError) as e:   # binascii.Error is a ValueError
        raise StateError(f"loader state's DALI checkpoint is not base64 ({e}) (field backend.checkpoint)") from e


def _at_end(state: dict, batch_size: int) -> bool:
    """Whether a saved state's DALI epoch was fully consumed when it was taken."""
    if "done" not in state:   # written before "done" existed: only the boundary state was marked
        return bool(state.get("finished_epoch"))
    return int(state["done"]) * batch_size >= int(state.get("samples") or 0) > 0
