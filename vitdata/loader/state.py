"""Internal consistency of a loader state, checked when it is loaded (docs/reliability.md I6), and whether a
saved state fits a loader (:func:`fingerprint_mismatch`).

A state holds where the loader stands several times over: the top-level ``epoch`` and ``position``, the
sampler's own ``epoch`` and ``position``, and for DALI the backend's loader epoch, the step its DALI epoch
begins at (``offset``), the steps of it delivered (``done``), its length (``samples``), the DALI epoch
(``dali_epoch``) and the checkpoint, which records DALI's own ``{"iter": done, "epoch_idx": dali_epoch}``.
They agree in every state :meth:`vitdata.loader.Loader.state_dict` writes; an edited or damaged state
whose values disagree is refused here with a :class:`~vitdata.errors.StateError` naming the field,
instead of loading and then skipping batches, failing at the first batch, or reporting a decode error.
"""
from __future__ import annotations

import base64
import binascii
import re

from vitdata.errors import StateError, check_int

_PIPELINE_DATA = re.compile(rb'\{"iter": (\d+), "epoch_idx": (\d+)\}')


def check_loader_state(state: dict, *, steps_per_epoch: int, batch_size: int, elastic: bool) -> None:
    """Refuse (StateError naming the field) a state whose fields disagree. ``steps_per_epoch`` and
    ``batch_size``: this loader's, after the state's sampler (and plan) were loaded."""
    epoch = check_int(state.get("epoch"), "loader state field epoch", error=StateError)
    position = check_int(state.get("position"), "loader state field position", error=StateError)
    sampler = state.get("sampler")
    if not isinstance(sampler, dict):
        raise StateError("loader state has no sampler state (field sampler)")
    for key, top in (("epoch", epoch), ("position", position)):
        if key in sampler and sampler[key] != top:
            raise StateError(f"loader state's {key} {top} differs from its sampler's ({sampler[key]!r}) "
                             f"(fields {key}, sampler.{key})")
    if position > steps_per_epoch:
        raise StateError(f"loader state's position {position} is past the end of the epoch ({steps_per_epoch} "
                         f"steps on this rank) (field position)")
    finished = bool(state.get("finished"))
    started = bool(state.get("started")) or finished
    if finished and position != steps_per_epoch:
        raise StateError(f"loader state marks its epoch finished at position {position} of {steps_per_epoch} "
                         f"steps (fields finished, position)")
    if not started and position:
        raise StateError(f"loader state has not started its epoch but stands at position {position} "
                         f"(fields started, position)")
    backend = state.get("backend") or {}
    if backend and not elastic and "checkpoint" in backend:
        check_dali_state(backend, epoch=epoch, position=position, started=started, batch_size=batch_size,
                         steps_per_epoch=steps_per_epoch)


def check_dali_state(b: dict, *, epoch: int, position: int, started: bool, batch_size: int,
                     steps_per_epoch: int) -> None:
    """The DALI backend's part: its fields, its checkpoint, and both against the top-level point."""
    ck = checkpoint_bytes(b.get("checkpoint"))
    fields = {k: check_int(b.get(k), f"loader state field backend.{k}", error=StateError)
              for k in ("dali_epoch", "epoch", "offset", "done", "samples")}
    found = _PIPELINE_DATA.findall(ck)
    if len(found) != 1:
        raise StateError("loader state's DALI checkpoint is damaged: it does not hold DALI's iteration record "
                         "(field backend.checkpoint)")
    it, dali_epoch = int(found[0][0]), int(found[0][1])
    if dali_epoch != fields["dali_epoch"]:
        raise StateError(f"loader state's DALI epoch {fields['dali_epoch']} differs from its checkpoint's "
                         f"({dali_epoch}) (field backend.dali_epoch)")
    if it != fields["done"]:
        raise StateError(f"loader state's DALI steps done {fields['done']} differ from its checkpoint's ({it}) "
                         f"(field backend.done)")
    at_end = fields["done"] * batch_size >= fields["samples"] > 0
    if started:
        if fields["epoch"] != epoch:
            raise StateError(f"loader state's epoch {epoch} differs from its DALI pipeline's ({fields['epoch']}) "
                             f"(fields epoch, backend.epoch)")
        if fields["offset"] + fields["done"] != position:
            raise StateError(f"loader state's position {position} differs from its DALI pipeline's (offset "
                             f"{fields['offset']} + done {fields['done']}) (fields position, backend.done)")
        if fields["samples"] != (steps_per_epoch - fields["offset"]) * batch_size:
            raise StateError(f"loader state's DALI epoch of {fields['samples']} samples does not match "
                             f"{steps_per_epoch - fields['offset']} steps of {batch_size} (field backend.samples)")
    elif not (at_end and fields["epoch"] == epoch - 1):
        raise StateError(f"loader state is at the start of epoch {epoch} but its DALI pipeline is not at the end "
                         f"of epoch {epoch - 1} (epoch {fields['epoch']}, {fields['done']} steps done) "
                         f"(fields epoch, backend.epoch, backend.done)")


def checkpoint_bytes(text) -> bytes:
    """The DALI checkpoint's bytes from its base64 text; StateError naming ``backend.checkpoint`` when the
    text is not base64 or the bytes are not a whole protobuf message (a truncated or spliced checkpoint)."""
    if not isinstance(text, str) or not text:
        raise StateError("loader state has no DALI checkpoint (field backend.checkpoint)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise StateError(f"loader state's DALI checkpoint is not base64 ({e}) (field backend.checkpoint)") from e
    if not _is_message(data):
        raise StateError("loader state's DALI checkpoint is damaged: its bytes are not a whole protobuf message "
                         "(field backend.checkpoint)")
    return data


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _is_message(data: bytes) -> bool:
    """Whether ``data`` parses as protobuf wire format to its last byte (fields 1.., wire types 0, 1, 2, 5)."""
    pos, n = 0, len(data)
    try:
        while pos < n:
            key, pos = _varint(data, pos)
            wire, field = key & 7, key >> 3
            if field < 1:
                return False
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(data, pos)
                pos += length
            else:
                return False
            if pos > n:
                return False
    except ValueError:
        return False
    return True


def fingerprint_mismatch(theirs: dict, mine: dict, *, skip=(), flags: dict | None = None) -> str | None:
    """None when a saved state's fingerprint fits this loader's, else a message naming what differs (fields
    spoken as the user's options when ``flags`` maps them, see :class:`vitdata.loader.config.LoaderConfig`).

    The schedule fits when its knobs are the same at every step: a schedule whose every rule is constant (the
    ``constant`` schedule) fits any run length, so a resume with a longer ``epochs`` goes on. A curriculum laid
    out over another length does not: its stages move with the run's length."""
    from vitdata.errors import name_options

    for key in mine:
        a, b = theirs.get(key), mine[key]
        if key in skip or a == b:
            continue
        if key == "schedule" and isinstance(a, dict) and isinstance(b, dict):
            why = _schedule_difference(a, b)
            if why is None:
                continue
            msg = f"loader state does not fit this loader: its curriculum {why}"
        else:
            msg = f"loader state does not fit this loader: field {key!r} (state: {_short(a)}, loader: {_short(b)})"
        return name_options(msg, flags or {})
    return None


def _short(v) -> str:
    text = str(v)
    return text if len(text) <= 120 else text[:117] + "..."


def _schedule_difference(a: dict, b: dict) -> str | None:
    rules_a, rules_b = a.get("rules") or {}, b.get("rules") or {}
    shape = ("patch_size", "round_sizes")
    constant = all(isinstance(r, dict) and r.get("type") == "constant" for r in [*rules_a.values(), *rules_b.values()])
    if constant and rules_a == rules_b and all(a.get(k) == b.get(k) for k in shape):
        return None
    name = a.get("name")
    if a.get("name") != b.get("name"):
        return f"is {b.get('name')!r} here but was {name!r} in the saved run (schedule.name)"
    if a.get("epochs") != b.get("epochs"):
        return (f"{name!r} was laid out over {a.get('epochs')} epochs in the saved run and over {b.get('epochs')} "
                f"here (schedule.epochs): a curriculum's stages move with the run's length, so the resumed epochs "
                f"would not continue the saved run; resume with schedule.epochs {a.get('epochs')}, or start a new run")
    if a.get("steps_per_epoch") != b.get("steps_per_epoch"):
        return (f"{name!r} has {b.get('steps_per_epoch')} steps per epoch here and had {a.get('steps_per_epoch')} in "
                f"the saved run (the data, batch_size or world size changed)")
    knobs = sorted(k for k in {**rules_a, **rules_b} if rules_a.get(k) != rules_b.get(k))
    knobs += [k for k in shape if a.get(k) != b.get(k)]
    return f"{name!r} differs from the saved run's in {', '.join(knobs)} (schedule.kwargs, augment)"
