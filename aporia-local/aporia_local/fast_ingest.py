"""The local Aporia server's fast path for logPredictions batches that need no warning.

`check_fragment` (aporia_store) checks a fragment value by value in Python, after the whole body was
parsed into Python objects: ~20 us a fragment. A batch the sync sends is nearly always clean, so this
module checks it in C instead: msgspec decodes the JSON array of fragments against types built from
the version schema (numbers finite and within orjson's range, tensors of the declared shape, no unknown
keys), building no Python dicts. A second decode keeps each fragment's parts as the JSON text the client
sent (`msgspec.Raw`), which is what gets stored, so nothing is serialised again.

Anything the types refuse (a value that would warn, an id-less fragment, a key the server ignores) makes
`FastBatch.decode` answer None, and the caller takes the slow path, which words the warnings or the
error exactly as before. The records stored are the same JSON values as the slow path's.
"""

from __future__ import annotations

import gc
import re
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from aporia_local.rules import Field, Schema
from aporia_provider.vocabulary import FIELD_GROUPS, wire_group

# orjson (the slow path's parser, and the one that re-reads stored records when they merge) takes 64-bit
# integers and finite doubles; the fast path accepts no more, so every stored record stays readable.
_FLOAT_MAX = sys.float_info.max
_Finite = Annotated[float, msgspec.Meta(ge=-_FLOAT_MAX, le=_FLOAT_MAX)]
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # larger ones take the slow path
_Number = _Int | _Finite
_NULL = msgspec.Raw(b"null")
_ABSENT = msgspec.Raw(b"")
_WHITESPACE = b" \t\r\n"
# (attribute, wire key, stored key): the parts of a fragment that are stored, in the record's key order.
_PARTS = (
    *((group, wire_group(group), group) for group in FIELD_GROUPS),
    ("actuals", "actuals", "actuals"),
    ("metrics", "metrics", "metrics"),
    ("confidence", "confidence", "confidence"),
)


def _value_type(spec: Field) -> Any:
    """The msgspec type of a value that `spec.problem` accepts without a word (JSON null aside)."""
    if spec.type == "numeric":
        return _Number
    if spec.type == "categorical":
        return _Int
    if spec.type in ("string", "text", "datetime"):  # datetime strings are parsed afterwards
        return str
    if spec.type == "boolean":
        return bool
    if spec.type == "vector":
        return list[_Number]
    if spec.type == "dict":
        return dict[str, _Number]
    shaped: Any = _Number
    for size in reversed(spec.dimensions or ()):
        shaped = Annotated[list[shaped], msgspec.Meta(min_length=size, max_length=size)]
    return shaped


def _group_struct(name: str, fields: dict[str, Field]) -> type[msgspec.Struct]:
    # Field names need not be Python identifiers: attributes are f0, f1, ... renamed to the field names.
    attributes = [(f"f{i}", _value_type(spec) | None, None) for i, spec in enumerate(fields.values())]
    renamed = {f"f{i}": field_name for i, field_name in enumerate(fields)}
    return msgspec.defstruct(name, attributes, rename=renamed, forbid_unknown_fields=True, gc=False)


# One fragment ready to store: (stream, id, normalised occurredAt or None, has predictions, has actuals, the
# record's JSON text), as the store's records table holds it.
Row = tuple[int, str, str | None, bool, bool, str]
_UTC_Z_TEXT = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
_UTC_Z = re.compile(_UTC_Z_TEXT)
_UTC_Z_LINES = re.compile(f"(?:{_UTC_Z_TEXT}\n)*{_UTC_Z_TEXT}")
_SMALL = 16  # parts shorter than this may be an empty object


class FastBatch:
    """The decoders of one version schema."""

    def __init__(self, schema: Schema, normalize_timestamp: Callable[[str], str]) -> None:
        self._normalize_timestamp = normalize_timestamp
        groups = {group: _group_struct(group, schema[group]) for group in FIELD_GROUPS}
        actuals = _group_struct("actuals", schema["predictions"])
        checked = msgspec.defstruct(
            "CheckedFragment",
            [
                ("id", Annotated[str, msgspec.Meta(min_length=1)]),
                *((group, groups[group] | None, None) for group in FIELD_GROUPS),
                ("actuals", actuals | None, None),
                ("metrics", dict[str, Any] | None, None),
                ("occurredAt", str | None, None),
                ("confidence", Any, None),
            ],
            rename={group: wire_group(group) for group in FIELD_GROUPS},
            forbid_unknown_fields=True,
            gc=False,
        )
        kept = msgspec.defstruct(
            "KeptFragment",
            [
                ("id", str),
                *((attribute, msgspec.Raw, _ABSENT) for attribute, _, _ in _PARTS),
                ("occurredAt", str | None, None),
            ],
            rename={attribute: wire for attribute, wire, _ in _PARTS},
            gc=False,
        )
        self._checked = msgspec.json.Decoder(list[checked])  # type: ignore[valid-type]
        self._kept = msgspec.json.Decoder(list[kept])  # type: ignore[valid-type]
        # (group attribute, field attribute) of datetime fields: their strings must parse as ISO-8601.
        self._datetimes = [
            (group, f"f{i}")
            for group in FIELD_GROUPS
            for i, spec in enumerate(schema[group].values())
            if spec.type == "datetime"
        ] + [("actuals", f"f{i}") for i, spec in enumerate(schema["predictions"].values()) if spec.type == "datetime"]

    def decode(self, predictions: bytes, stream: int) -> list[Row] | None:
        """The rows of a JSON array of fragments for `stream`, or None when any fragment needs the slow
        path's words."""
        # Tens of thousands of short-lived objects per batch: the cyclic collector would scan them in vain.
        with _gc_paused():
            return self._decode(predictions, stream)

    def _decode(self, predictions: bytes, stream: int) -> list[Row] | None:
        try:
            checked: Sequence[Any] = self._checked.decode(predictions)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if self._datetimes and not self._datetimes_parse(checked):
            return None
        del checked
        kept: Sequence[Any] = self._kept.decode(predictions)
        # Without a null anywhere in the batch, a part is present exactly when it is not left out.
        stamps = None if b"null" in predictions else self._utc_stamps([f.occurredAt for f in kept])
        if stamps is None:
            general = [self._row(fragment) for fragment in kept]
            return None if None in general else [(stream, *row) for row in general if row is not None]
        rows: list[Row] = []
        append = rows.append
        for fragment, occurred_at in zip(kept, stamps, strict=True):
            features, predictions_part, actuals = fragment.features, fragment.predictions, fragment.actuals
            if fragment.raw_inputs or fragment.metrics or fragment.confidence:
                row = self._row(fragment)
                if row is None:
                    return None
                append((stream, *row))
            elif features and predictions_part and not actuals:
                # What the sync sends for a prediction: {id, features, predictions, occurredAt}.
                if occurred_at is None:
                    return None  # a prediction without occurredAt: the slow path warns
                append(
                    (
                        stream,
                        fragment.id,
                        occurred_at,
                        len(predictions_part) >= _SMALL or not _empty_object(predictions_part),
                        False,
                        (b'{"features":%b,"predictions":%b}' % (features, predictions_part)).decode(),
                    )
                )
            elif actuals and not (features or predictions_part):
                # ... and for a delayed actual: {id, actuals}.
                append(
                    (
                        stream,
                        fragment.id,
                        occurred_at,
                        False,
                        len(actuals) >= _SMALL or not _empty_object(actuals),
                        (b'{"actuals":%b}' % actuals).decode(),
                    )
                )
            else:
                row = self._row(fragment)
                if row is None:
                    return None
                append((stream, *row))
        return rows

    def _utc_stamps(self, stamps: list[str | None]) -> list[str | None] | None:
        """The occurredAt values normalised, when all are UTC with Z as Spark writes them (or all absent)."""
        present = [stamp for stamp in stamps if stamp is not None]
        if not present:
            return stamps
        if len(present) != len(stamps):
            return None
        joined = "\n".join(present)
        if not _UTC_Z_LINES.fullmatch(joined):
            return None
        try:
            deque(map(datetime.fromisoformat, present), maxlen=0)  # the digits may still be no date
        except ValueError:
            return None
        return joined.replace("Z", "+00:00").split("\n")  # type: ignore[return-value]

    def _utc(self, value: str) -> str:
        if len(value) == 27 and _UTC_Z.fullmatch(value):
            datetime.fromisoformat(value)  # the digits may still be no date
            return value[:-1] + "+00:00"
        return self._normalize_timestamp(value)

    def _row(self, fragment: Any) -> tuple[str, str | None, bool, bool, str] | None:
        """Any fragment the types accepted, nulls and all parts considered; None: the slow path words it."""
        parts = (
            fragment.features,
            fragment.predictions,
            fragment.raw_inputs,
            fragment.actuals,
            fragment.metrics,
            fragment.confidence,
        )
        present = [_present(part) for part in parts]
        occurred_at = fragment.occurredAt
        if occurred_at is not None:
            try:
                occurred_at = self._utc(occurred_at)
            except ValueError:
                return None  # the slow path warns and stores the fragment without a timestamp
        elif present[1]:
            return None  # a prediction without occurredAt: the slow path warns
        for part, carried in zip(parts[4:], present[4:], strict=True):
            # Values of any JSON type: they must also be what orjson reads back when records merge.
            if carried:
                try:
                    orjson.loads(bytes(part))
                except orjson.JSONDecodeError:
                    return None
        data = b",".join(
            b'"%b":%b' % (stored.encode(), part)
            for (_, _, stored), part, carried in zip(_PARTS, parts, present, strict=True)
            if carried
        )
        return (
            fragment.id,
            occurred_at,
            present[1] and not _empty_object(parts[1]),
            present[3] and not _empty_object(parts[3]),
            (b"{%b}" % data).decode(),
        )

    def _datetimes_parse(self, checked: Sequence[Any]) -> bool:
        for fragment in checked:
            for group, attribute in self._datetimes:
                part = getattr(fragment, group)
                value = getattr(part, attribute) if part is not None else None
                if value is not None:
                    try:
                        datetime.fromisoformat(value)
                    except ValueError:
                        return False
        return True


def _present(part: msgspec.Raw) -> bool:
    """A part the fragment carries: neither left out nor JSON null (the slow path skips both)."""
    return len(part) > 0 and part != _NULL


def _empty_object(part: msgspec.Raw) -> bool:
    """`{}` (the slow path's record holds it, but it counts as no predictions or actuals)."""
    return len(part) < _SMALL and bytes(part).translate(None, _WHITESPACE) == b"{}"


_gc_lock = threading.Lock()
_gc_pauses = 0


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector (process-wide) while any thread decodes a batch."""
    global _gc_pauses
    with _gc_lock:
        _gc_pauses += 1
        if _gc_pauses == 1:
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0:
                gc.enable()
