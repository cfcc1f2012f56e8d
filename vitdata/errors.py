"""Errors raised by vitdata. Every data error names the file (or tar shard and member offset), the sample
id when known, and a reason code from a fixed list, so a failure is never a bare traceback from DALI."""
from __future__ import annotations

# Reason codes. Read/decode time (docs/reliability.md A1) and index time (docs/reliability.md group E).
REASONS = (
    # read and decode time
    "truncated", "unsupported_format", "too_many_pixels", "checksum_mismatch", "missing",
    "size_changed", "bad_label", "read_timeout", "decode_error",
    # index time
    "not_found", "unreadable", "empty_dataset", "missing_label", "missing_image", "duplicate_key",
    "non_regular_member", "bad_header", "member_too_large", "bad_key",
    # index time, ImageFolder links (vitdata.data.folders): passed over and counted
    "symlink_loop", "symlink_outside", "duplicate_file",
    # read time: a JPEG libjpeg decodes with a "Corrupt JPEG data" warning (vitdata.data.jpegwalk); delivered
    # and counted by default (Loader.warned()), skipped like a bad sample with LoaderConfig(jpeg_warnings="skip")
    "corrupt_data",
)
# Reasons of samples that are delivered, not skipped, unless the loader is told to skip them.
WARNINGS = ("corrupt_data",)


class VitdataError(Exception):
    """Base class of every error vitdata raises on purpose."""


class ConfigError(VitdataError, ValueError):
    """An invalid configuration; the message names the offending fields."""

    def __init__(self, message: str, fields: tuple[str, ...] | list[str] = ()):
        self.fields = tuple(fields)
        self.message = message
        prefix = f"[{', '.join(self.fields)}] " if self.fields else ""
        super().__init__(prefix + message)

    def named_as(self, options: dict[str, str]) -> "ConfigError":
        """The same error in the words of a command line: each field that ``options`` maps (``"schedule.epochs"``
        -> ``"--epochs"``) is named by its option, in the field list and in the message (:func:`name_options`).
        The fields themselves are kept, so code that tests ``fields`` is unaffected."""
        text = name_options(self.message, options or {})
        if not any(f in (options or {}) for f in self.fields) and text == self.message:
            return self
        err = ConfigError(text, self.fields)
        named = list(dict.fromkeys(_option_word(options.get(f, f)) for f in self.fields))
        err.args = ((f"[{', '.join(named)}] " if named else "") + err.message,)
        return err


def _option_word(option: str) -> str:
    return option.replace("={}", "").replace(" {}", "")


def name_options(message: str, options: dict[str, str]) -> str:
    """``message`` with each field of ``options`` replaced by its option wherever it stands as a word. An option
    holding ``{}`` takes the number that follows the field (``"patch_size 8"`` with ``{"patch_size":
    "--model-kwargs patch_size={}"}`` -> ``"--model-kwargs patch_size=8"``). A field that could be an English
    word (no ``_`` or ``.``: ``schedule``, ``data``) is left in the text (ConfigError renames it in its field list)."""
    import re

    for field in sorted(options, key=len, reverse=True):     # "eval.batch_size" before "batch_size"
        if "_" not in field and "." not in field:
            continue
        option = options[field]

        def swap(m, option=option):
            if "{}" in option:
                return option.format(m.group(1)) if m.group(1) else _option_word(option)
            return option + (f" {m.group(1)}" if m.group(1) else "")

        message = re.sub(rf"(?<![\w.\-]){re.escape(field)}(?![\w.])(?: (-?\d[\d.]*))?", swap, message)
    return message


class DataError(VitdataError):
    """A bad sample or a bad source file.

    Attributes: ``reason`` (one of ``REASONS``), ``path`` (file, or tar shard), ``offset`` (tar member
    header offset in bytes, or None), ``sample_id`` (index position, or None), ``detail`` (free text).
    """

    def __init__(self, reason: str, path: str, *, sample_id: int | None = None, offset: int | None = None,
                 detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        self.reason, self.path, self.sample_id, self.offset, self.detail = reason, str(path), sample_id, offset, detail
        where = self.path if offset is None else f"{self.path} (member at byte {offset})"
        sid = "" if sample_id is None else f" sample {sample_id}:"
        super().__init__(f"[{reason}]{sid} {where}" + (f": {detail}" if detail else ""))

    def __reduce__(self):  # keep the attributes across process boundaries (DALI workers, DataLoader workers)
        return (_rebuild_data_error, (self.reason, self.path, self.sample_id, self.offset, self.detail))


def _rebuild_data_error(reason, path, sample_id, offset, detail):
    return DataError(reason, path, sample_id=sample_id, offset=offset, detail=detail)


class WorkerError(VitdataError):
    """A data worker process died (killed, out of memory, crashed) while preparing a batch. ``pids``:
    the dead workers; ``sample_ids``: the ids of the step that was waiting for it."""

    def __init__(self, message: str, *, pids=(), sample_ids=()):
        self.pids, self.sample_ids = tuple(pids), tuple(sample_ids)
        super().__init__(message)


class StateError(VitdataError):
    """A checkpoint or index file that cannot be loaded: wrong version, checksum, truncation or mismatch."""


def check_int(value, field: str, minimum: int = 0, error: type[VitdataError] = ConfigError) -> int:
    """``value`` as an int: an integer (not a bool) >= ``minimum``, else ``error`` saying so and naming
    ``field`` (a ConfigError also lists it in its ``fields``)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        message = f"{field} must be an integer >= {minimum}, got {value!r}"
        raise ConfigError(message, (field,)) if error is ConfigError else error(message)
    return int(value)


def check_format(what: str, fmt, current: int) -> int:
    """The format version ``fmt`` of a saved ``what`` (a plan, a sampler state...), checked against the
    version this vitdata writes: StateError when it is missing or invalid, or newer than ``current``."""
    import numbers

    if isinstance(fmt, bool) or not isinstance(fmt, numbers.Integral) or fmt < 1:
        raise StateError(f"{what} has no valid format version (got {fmt!r})")
    if fmt > current:
        raise StateError(f"{what} written by a newer vitdata (format {fmt}; this one reads {current})")
    return int(fmt)


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` that points at the first caller outside vitdata (the trainer's
    line), however deep inside vitdata the warning is given."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        frame, level = frame.f_back, level + 1
    return level
