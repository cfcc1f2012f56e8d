"""A loader's saved state: what it holds, the checks made when it is loaded, states of format 1, and
whether a saved state fits a loader (:func:`fingerprint_mismatch`).

Format 2 (written by :meth:`vitdata.loader.Loader.state_dict`), plain JSON data:

===============  ==========================================================================================
``format``       2
``fingerprint``  what the state belongs to: index, batch size, seed, world size, rank, split, backend, schedule
``epoch``        where the loader stands, said once: the epoch, and the steps of it handed over on this
``position``     rank (the epoch is finished when ``position`` is its step count)
``sampler``      the sampler's configuration and the epoch's plan (:meth:`Sampler.state_dict` without its
                 epoch and position, which are the loader's)
``backend``      the backend's own state (torch: empty). DALI: its checkpoint (base64 text) and the pipeline's
                 own record of where it stands: the loader epoch it serves, the step its DALI epoch begins
                 at (``offset``), the steps of it delivered (``done``), its length (``samples``) and the DALI
                 epoch (``dali_epoch``); the checkpoint records ``{"iter": done, "epoch_idx": dali_epoch}``.
                 A state taken between a step that failed in the decoder and the next good step holds an
                 earlier checkpoint and ``replay``, the steps run again from it on load (iter + replay = done)
``skipped``      the skip report; ``quarantine``: decoder-refused ids; ``oracle``: the oracle's state or None
===============  ==========================================================================================

The DALI pipeline's record is the one place a state says where it stands twice, because the checkpoint
is DALI's own: it must agree with ``epoch`` and ``position``, and an edited or damaged state whose values
disagree is refused with a :class:`~vitdata.errors.StateError` naming the field (docs/reliability.md I6),
instead of loading and then skipping batches, failing at the first batch, or reporting a decode error.

Format 1 held the sampler's ``epoch`` and ``position`` and the flags ``finished`` and ``started`` as well;
a format-1 state loads when they agree with what they repeat (else a StateError names the field) and is
read as format 2 without them.
"""
from __future__ import annotations

import base64
import binascii
import re

from vitdata.errors import StateError, check_int
from vitdata.io import from_json

STATE_FORMAT = 2
_PIPELINE_DATA = re.compile(rb'\{"iter": (\d+), "epoch_idx": (\d+)\}')
_FINGERPRINT_ELASTIC = ("world_size", "rank", "batch_size")


def read_state(state) -> dict:
    """``state`` with its arrays decoded, after checking it is a loader state of a format this vitdata reads."""
    if not isinstance(state, dict) or "format" not in state:
        raise StateError("not a vitdata loader state (no 'format' field)")
    state = from_json(state)
    fmt = state["format"]
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise StateError(f"loader state has no valid format version (field format: {fmt!r})")
    if fmt > STATE_FORMAT:
        raise StateError(f"loader state written by a newer vitdata (format {fmt}; this one reads {STATE_FORMAT})")
    check_int(state.get("epoch"), "loader state field epoch", error=StateError)
    check_int(state.get("position"), "loader state field position", error=StateError)
    if not isinstance(state.get("sampler"), dict):
        raise StateError("loader state has no sampler state (field sampler)")
    if fmt == 1:
        for key in ("epoch", "position"):
            if key in state["sampler"] and state["sampler"][key] != state[key]:
                raise StateError(f"loader state's {key} {state[key]} differs from its sampler's "
                                 f"({state['sampler'][key]!r}) (fields {key}, sampler.{key})")
    return state


def match_fingerprint(theirs, mine: dict, flags: dict | None = None) -> bool:
    """Refuse a state of another dataset index, batch size, seed, split, backend or schedule (StateError
    naming the field, or the command-line option in ``flags``); returns whether it comes from another rank
    or world size (an elastic resume), which must keep the global batch size."""
    if not isinstance(theirs, dict):
        raise StateError("loader state has no fingerprint (field fingerprint)")
    elastic = any(theirs.get(k) != mine[k] for k in ("world_size", "rank"))
    if elastic:
        saved_g = int(theirs.get("world_size") or 0) * int(theirs.get("batch_size") or 0)
        world, batch = mine["world_size"], mine["batch_size"]
        if saved_g != world * batch:
            raise StateError(f"loader state was saved with global batch {saved_g} (world_size "
                             f"{theirs.get('world_size')} x batch_size {theirs.get('batch_size')}); this loader "
                             f"has global batch {world * batch} (world_size {world} x batch_size {batch}). A "
                             f"world-size change must keep the global batch size: "
                             + (f"use batch_size={saved_g // world}" if saved_g % world == 0
                                else f"{saved_g} is not divisible by world_size {world}")
                             + " [fields: global_batch_size, world_size]")
    mismatch = fingerprint_mismatch(theirs, mine, skip=_FINGERPRINT_ELASTIC if elastic else (), flags=flags)
    if mismatch:
        raise StateError(mismatch)
    return elastic


def current_format(state: dict) -> dict:
    """A state read by :func:`read_state` as format 2 writes it (format 1's repeated fields dropped)."""
    if state["format"] == STATE_FORMAT:
        return state
    out = {k: v for k, v in state.items() if k not in ("finished", "started")}
    out["sampler"] = {k: v for k, v in state["sampler"].items() if k not in ("epoch", "position")}
    out["format"] = STATE_FORMAT
    return out


def check_point(state: dict, *, steps_per_epoch: int, batch_size: int, elastic: bool) -> None:
    """Refuse (StateError naming the field) a state whose position lies past its epoch, whose format-1
    flags contradict it, or whose DALI pipeline stands elsewhere. ``steps_per_epoch`` and ``batch_size``:
    this loader's, after the state's sampler (and plan) were loaded."""
    epoch, position = int(state["epoch"]), int(state["position"])
    if position > steps_per_epoch:
        raise StateError(f"loader state's position {position} is past the end of the epoch ({steps_per_epoch} "
                         f"steps on this rank) (field position)")
    if state["format"] == 1:
        if state.get("finished") and position != steps_per_epoch:
            raise StateError(f"loader state marks its epoch finished at position {position} of {steps_per_epoch} "
                             f"steps (fields finished, position)")
        if not (state.get("started") or state.get("finished")) and position:
            raise StateError(f"loader state has not started its epoch but stands at position {position} "
                             f"(fields started, position)")
    backend = state.get("backend") or {}
    if backend and not elastic and "checkpoint" in backend:
        check_dali_state(backend, epoch=epoch, position=position, batch_size=batch_size,
                         steps_per_epoch=steps_per_epoch)


def check_dali_state(b: dict, *, epoch: int, position: int, batch_size: int, steps_per_epoch: int) -> None:
    """The DALI backend's record against its checkpoint, and both against the loader's point: a pipeline
    serving ``epoch`` stands at ``position``; any other is the previous epoch's, consumed to its end, with
    ``epoch`` not begun yet."""
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
    replay = check_int(b.get("replay", 0), "loader state field backend.replay", error=StateError)
    if replay < 0 or it + replay != fields["done"]:
        raise StateError(f"loader state's DALI steps done {fields['done']} differ from its checkpoint's ({it}) "
                         f"+ the steps to replay from it ({replay}) (fields backend.done, backend.replay)")
    if fields["epoch"] == epoch:
        if fields["offset"] + fields["done"] != position:
            raise StateError(f"loader state's position {position} differs from its DALI pipeline's (offset "
                             f"{fields['offset']} + done {fields['done']}) (fields position, backend.done)")
        if fields["samples"] != (steps_per_epoch - fields["offset"]) * batch_size:
            raise StateError(f"loader state's DALI epoch of {fields['samples']} samples does not match "
                             f"{steps_per_epoch - fields['offset']} steps of {batch_size} (field backend.samples)")
    elif not (fields["done"] * batch_size >= fields["samples"] > 0 and fields["epoch"] == epoch - 1 and not position):
        raise StateError(f"loader state stands at epoch {epoch} position {position} but its DALI pipeline serves "
                         f"epoch {fields['epoch']} ({fields['done']} steps done), not the end of epoch {epoch - 1} "
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
