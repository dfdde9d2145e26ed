"""Strict decoding of stored records, written once for every backend.

A record read back from an engine is the boundary where a bad value must
stop: past it, a naive datetime raises ``TypeError`` in a worker's TTL check
and an infinite ``result_ttl`` raises ``OverflowError`` while the result is
built, and a worker that hands such a task back loops on it for ever. So:

* blobs (Redis, NATS, files) decode through msgspec with the field types of
  :mod:`omniq.models` (:data:`~omniq.models.AwareDatetime`,
  :data:`~omniq.models.Seconds`): the checks run in C and cost nothing;
  :func:`msgpack_decoder` / :func:`json_decoder` make such a decoder for a
  sub-record (a stored error, a dependency list, an event) and turn
  msgspec's errors into :class:`~omniq.errors.SerializationError`;
* tasks built from columns (SQLite, PostgreSQL) are not seen by msgspec:
  :func:`task_from_row` builds one and checks what a column can get wrong
  (durations, and any conversion error) with three comparisons;
* a record that fails while it is being **claimed** is not dropped and does
  not fail the claim: :func:`salvage_task` keeps every field that is still
  valid and returns a :class:`CorruptTask`, which the worker ends FAILED
  after that one attempt (``get`` / ``list`` raise SerializationError).

Backends import these names from :mod:`omniq.base`, beside the contract they serve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from omniq.constants import MAX_DURATION_SECONDS
from omniq.errors import SerializationError
from omniq.models import Task, TaskError

__all__ = [
    "CorruptTask",
    "claimed_task",
    "decode_error",
    "from_row",
    "json_decoder",
    "msgpack_decoder",
    "salvage_blob",
    "salvage_task",
    "task_from_row",
]

T = TypeVar("T")
R = TypeVar("R")

#: what building a task from columns raises for a column of the wrong type or out of range
#: (msgspec's DecodeError and ValidationError are ValueErrors; OSError: fromtimestamp of a time out of range;
#: RecursionError: a sub-record nested too deep).
_COLUMN_ERRORS = (ValueError, TypeError, OverflowError, OSError, KeyError, IndexError, RecursionError)
_LIMIT = MAX_DURATION_SECONDS


class CorruptTask(Task, kw_only=True, gc=False):
    """A claimed task whose stored record failed strict decoding.

    Every field that could still be read keeps its value, the others hold
    their defaults; ``problem`` says what was wrong. The worker does not run
    it: it ends it FAILED (a ``CorruptRecord`` error) under the lease the
    claim took, so the task is neither lost nor claimed again and again.
    """

    problem: str = ""


def msgpack_decoder(kind: type[T], what: str) -> Callable[[bytes], T]:
    """A strict MessagePack decoder of ``kind`` whose errors are SerializationError naming ``what``."""
    decode = msgspec.msgpack.Decoder(kind).decode

    def strict(data: bytes) -> T:
        try:
            return decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError included; RecursionError: nesting
            raise SerializationError(f"corrupted {what}: {exc}") from exc

    return strict


def json_decoder(kind: type[T], what: str) -> Callable[[bytes | str], T]:
    """A strict JSON decoder of ``kind`` whose errors are SerializationError naming ``what``."""
    decode = msgspec.json.Decoder(kind).decode

    def strict(data: bytes | str) -> T:
        try:
            return decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise SerializationError(f"corrupted {what}: {exc}") from exc

    return strict


#: a stored TaskError (msgpack); raises SerializationError.
decode_error = msgpack_decoder(TaskError, "task error")


def from_row(build: Callable[[R], T], row: R, what: str) -> T:
    """``build(row)`` for a record built from columns (a result, an event), its errors as SerializationError.

    Raises:
        omniq.errors.SerializationError: a column holds a value of the wrong type or an undecodable sub-record.
    """
    try:
        return build(row)
    except SerializationError:
        raise
    except _COLUMN_ERRORS as exc:
        raise SerializationError(f"corrupted {what}: {type(exc).__name__}: {exc}") from exc


def task_from_row(build: Callable[[R], Task], row: R) -> Task:
    """``build(row)``, checked as strictly as a decoded blob would be.

    Raises:
        omniq.errors.SerializationError: a column holds a value of the wrong
            type, an undecodable sub-record, a time out of range, or a
            duration that is not a finite number of at most a century.
    """
    try:
        task = build(row)
        for value in (task.interval, task.timeout, task.result_ttl):
            if value is not None and not -_LIMIT <= value <= _LIMIT:
                raise SerializationError(f"corrupted task record {task.id}: duration {value!r} out of range")
    except SerializationError:
        raise
    except _COLUMN_ERRORS as exc:
        raise SerializationError(f"corrupted task record: {type(exc).__name__}: {exc}") from exc
    return task


def claimed_task(build: Callable[[R], Task], row: R, fields: Callable[[R], Mapping[str, Any]]) -> Task:
    """:func:`task_from_row` for a row a claim (or a recovery) has just leased.

    A row that fails is salvaged (:func:`salvage_task` of ``fields(row)``, the
    row's raw values by field name) into a :class:`CorruptTask`, not raised:
    one corrupted task neither fails the batch nor comes back for ever.
    """
    try:
        return task_from_row(build, row)
    except SerializationError as exc:
        return salvage_task(fields(row), str(exc))


_FIELD_TYPES = {field.name: field.type for field in msgspec.structs.fields(Task)}


def salvage_task(fields: Mapping[str, Any], problem: str) -> CorruptTask:
    """A :class:`CorruptTask` from the raw ``fields`` of a record that failed strict decoding.

    Each field is converted on its own (leniently: epoch seconds become
    datetimes, as SQL columns store them) and kept only if valid; unknown
    names are ignored. The failure path only: it walks every field.

    Raises:
        omniq.errors.SerializationError: not even the task's id can be read.
    """
    kept: dict[str, Any] = {}
    for name, value in fields.items():
        kind = _FIELD_TYPES.get(name)
        if kind is None:
            continue
        try:
            kept[name] = msgspec.convert(value, kind, strict=False)
        except (msgspec.ValidationError, RecursionError):
            continue
    if "id" not in kept:
        raise SerializationError(f"{problem} (not even the task's id could be read)")
    kept.setdefault("func", "")
    return CorruptTask(**kept, problem=problem)


def salvage_blob(data: bytes, problem: str) -> CorruptTask:
    """:func:`salvage_task` of a MessagePack task envelope that failed strict decoding.

    Raises:
        omniq.errors.SerializationError: the bytes are not even a MessagePack map with an id.
    """
    try:
        fields = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise SerializationError(f"{problem} (not MessagePack: {exc})") from exc
    if not isinstance(fields, dict):
        raise SerializationError(f"{problem} (not a MessagePack map)")
    return salvage_task(fields, problem)
