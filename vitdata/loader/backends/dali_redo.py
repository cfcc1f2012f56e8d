"""The redo of a DALI step that failed in the decoder, without rebuilding or re-tracing the graph.

DALI cannot skip a sample inside a running step (NVIDIA/DALI#3913), but a pipeline whose ``run()`` failed
in an operator stays usable (DALI 2.4, CPU and parallel sources checked): the next ``run()`` delivers the
next step, with the augmentation draws it has in a run where the failing file was known in advance
(``tests/reliability/test_quarantine.py`` compares the two, pixels included). The failure loses only the
step itself. :class:`Twin` produces it again: the same graph made from the main pipeline's serialized
form (``Pipeline.deserialize_and_build``: no Python trace, a few ms, where tracing the RandAugment graph's
conditionals costs seconds on a CPU), restored from the checkpoint of the random state before the step,
and fed that step's source outputs computed in this process with the quarantine substituted
(``EpochSource.step_outputs``). Its output is the step a loader that knew the file in advance delivers.

Which sample failed: DALI's message names its place in the batch (``Failed to decode sample #4``);
:func:`failed_sample` reads it, so the probe decodes that one sample instead of the whole step.

Checkpoints around a failure (measured on DALI 2.4): right after a failed ``run()`` the pipeline's
checkpoint still holds the random state before that step while its iteration count is past it. It is the
right state to restore the twin from, and the wrong one to save: a pipeline rebuilt from it draws the
failed step's augmentations for the next step. So the loader's saved state then takes the last checkpoint
taken before the failure with the steps to replay from it (``replay``), until the main pipeline's next
step succeeds; and when that next step fails too, the twin's own checkpoint after the redo is the random
state before it.

Where a failed ``run()`` ends the pipeline after all (another DALI build, another device), the step after
a redo fails with no sample to blame; the backend then rebuilds from the last good checkpoint and replays
up to that step (``DaliBackend._rebuild_and_replay``), which is what every failure cost before the redo.
"""
from __future__ import annotations

import re

from vitdata.errors import DataError

_FAILED_SAMPLE = re.compile(r"Failed to decode sample #(\d+)")


def failed_sample(exc: BaseException | None) -> int | None:
    """The batch position DALI names in a decoder failure (``Failed to decode sample #k``), or None."""
    seen = exc
    while seen is not None:
        m = _FAILED_SAMPLE.search(str(seen))
        if m:
            return int(m.group(1))
        seen = seen.__cause__ or seen.__context__
    return None


class Twin:
    """A copy of one built pipeline's graph that runs single steps fed by hand, each from a checkpoint.

    ``pipe``: the main pipeline (built by ``vitdata.pipelines.graphs.build_pipeline``, so it carries
    ``vitdata_inputs``); it is serialized once, here. The copy is built at its first step and restored in
    place for the next ones, also after a step that failed in it (DALI's backend call that ``Pipeline.build``
    makes for ``checkpoint=``: 0.05 ms, where building the copy again costs ~80 ms for the RandAugment graph
    on a CPU); where that call is missing, each step builds a new copy."""

    def __init__(self, pipe, *, batch_size: int, num_threads: int, device_id: int | None):
        self.serialized = pipe.serialize()
        self.inputs = tuple(pipe.vitdata_inputs)
        self.batch_size, self.num_threads, self.device_id = batch_size, num_threads, device_id
        self.pipe = None   # the copy (the outputs of its last step live while it does)

    def run(self, checkpoint: bytes, outputs: tuple):
        """The outputs of one step of the graph restored from ``checkpoint`` and fed ``outputs`` (the
        source's outputs of that step, in ``inputs`` order), and the checkpoint after it."""
        restore = getattr(getattr(self.pipe, "_pipe", None), "RestoreFromSerializedCheckpoint", None)
        if restore is not None:
            restore(checkpoint)
        else:
            self.pipe = self._build(checkpoint)
        for name, value in zip(self.inputs, outputs):
            self.pipe.feed_input(name, value)
        outs = self.pipe.run()
        return outs, bytes(self.pipe.checkpoint())

    def _build(self, checkpoint: bytes):
        from nvidia.dali.pipeline import Pipeline

        pipe = Pipeline(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                        checkpoint=checkpoint, enable_checkpointing=True, prefetch_queue_depth=1)
        pipe.deserialize_and_build(self.serialized)
        return pipe


class Probe:
    """The one-sample pipeline with the graph's decoder kind (``vitdata.pipelines.graphs.build_probe``) that
    says which samples the decoder refuses, in the decoder's own words."""

    def __init__(self, spec, device_id: int | None):
        self.spec, self.device_id = spec, device_id
        self.pipe = None

    def refused(self, ctx, ids, positions, quarantine: frozenset) -> list[tuple[int, str]]:
        """(id, decoder's words) of each sample delivered at ``positions`` of the order ``ids`` (resolved
        with ``quarantine`` substituted, as the source does) that the decoder refuses."""
        from vitdata.data.checks import resolve_sample
        from vitdata.loader.quarantine import capture_stderr, decoder_words
        from vitdata.pipelines.graphs import build_probe, probe_decodes

        refused = []
        for pos in positions:
            try:
                sid, _, data = resolve_sample(ctx.reader, ctx.index, ids, pos, ctx.cfg.max_pixels, quarantine)
            except DataError:
                continue
            if any(sid == r[0] for r in refused):
                continue
            if self.pipe is None:
                self.pipe = build_probe(self.spec, self.device_id)
            said: list[str] = []
            try:
                with capture_stderr(said):
                    probe_decodes(self.pipe, data)
            except Exception as e:   # the probe stays usable (graphs.build_probe)
                refused.append((sid, decoder_words("".join(said), e)))
        return refused
