"""Fuzzing record decoding: a mutated stored record decodes to a strict record or raises SerializationError.

Stored task envelopes and results (files, Redis, NATS), SQLite rows and
Redis script rows are mutated: bytes flipped, cut and inserted; one field
replaced by any MessagePack value (naive datetimes, nan, inf, huge numbers,
nesting thousands deep, wrong types). Decoding either raises
``SerializationError`` or gives a record that is strict: every datetime
aware, every duration a finite number within a century. Reading it for a
claim (salvage) never raises anything else either, and a salvaged task is
just as strict. Plain TEXT and INTEGER columns of the SQL engines are typed
by their schema and are not fuzzed here; the columns that carry encoded
sub-records, times and durations are.

Bounded for CI; ``OMNIQ_FUZZ_EXAMPLES`` raises the number of examples (see
``test_fuzz_payloads.py`` for the long-run command).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, strategies as st

from omniq.base import CorruptTask, claimed_task, salvage_blob
from omniq.constants import MAX_DURATION_SECONDS
from omniq.errors import SerializationError
from omniq.models import Task, TaskError, TaskResult, TaskStatus, decode_result, decode_task, encode_result, encode_task
from tests.core.fuzzing import fuzz_settings

FUZZ = fuzz_settings(200)

TIMES = ("eta", "expires_at", "created_at", "updated_at", "started_at", "finished_at", "lease_expires_at")
DURATIONS = ("interval", "timeout", "result_ttl")
TASK_FIELDS = tuple(f.name for f in msgspec.structs.fields(Task))

aware = st.datetimes(datetime(1971, 1, 1), datetime(2200, 1, 1), timezones=st.just(timezone.utc))
durations = st.none() | st.floats(0, 10**6)
ids = st.text("0123456789abcdef", min_size=1, max_size=32)
errors = st.none() | st.builds(
    TaskError, type=st.text(max_size=10), message=st.text(max_size=20), attempt=st.integers(0, 9)
)

tasks = st.builds(
    Task,
    id=ids,
    func=st.text(max_size=20),
    payload=st.binary(max_size=20),
    queue=st.text(min_size=1, max_size=10),
    priority=st.integers(-10, 10),
    status=st.sampled_from(TaskStatus),
    eta=st.none() | aware,
    interval=durations,
    timeout=durations,
    expires_at=st.none() | aware,
    result_ttl=durations,
    depends_on=st.lists(ids, max_size=3).map(tuple),
    created_at=aware,
    started_at=st.none() | aware,
    lease_token=st.none() | ids,
    attempts=st.integers(0, 5),
    error=errors,
)

#: any value a corrupted store could hand back in a field.
junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.sampled_from([math.inf, -math.inf, math.nan, 1e14, -1e300, 1e308])
    | st.text(max_size=30)
    | st.sampled_from(["2030-01-01T00:00:00", "2030-01-01T00:00:00+00:00", "running", "not a time", ""])
    | st.binary(max_size=20)
    | st.datetimes(),  # naive, and msgpack-encoded as such
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
deep = st.integers(100, 5000).map(lambda depth: msgspec.Raw(b"\x91" * depth + b"\xc0"))


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few random byte edits."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del out[at:]
        else:
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


@st.composite
def replaced(draw: st.DrawFn, record: Any, names: tuple[str, ...]) -> bytes:
    """``record`` as a MessagePack map with one to three fields replaced by junk (or deep nesting)."""
    fields = msgspec.to_builtins(record, builtin_types=(bytes, datetime))
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        fields[name] = draw(junk | deep)
    return msgspec.msgpack.encode(fields)


def strict(record: Task | TaskResult) -> None:
    """Every datetime aware, every duration finite and within a century, and a result can be built."""
    for name in TIMES:
        value = getattr(record, name, None)
        assert value is None or (isinstance(value, datetime) and value.tzinfo is not None), (name, value)
    for name in DURATIONS:
        value = getattr(record, name, None)
        assert value is None or (math.isfinite(value) and abs(value) <= MAX_DURATION_SECONDS), (name, value)
    if isinstance(record, Task):
        assert record.expires_at is None or record.expires_at + timedelta(0) is not None
        TaskResult.from_task(record)  # raises on an expiry it cannot compute


def decoded_or_error(decode: Any, data: bytes) -> Any:
    try:
        record = decode(data)
    except SerializationError:
        return None
    strict(record)
    return record


@FUZZ
@given(data=tasks.map(encode_task).flatmap(mutated))
def test_a_mutated_task_envelope_decodes_strictly_or_raises(data: bytes) -> None:
    decoded_or_error(decode_task, data)


@FUZZ
@given(data=tasks.flatmap(lambda task: replaced(task, TASK_FIELDS)))
def test_a_task_envelope_with_junk_fields_decodes_strictly_or_raises(data: bytes) -> None:
    if decoded_or_error(decode_task, data) is None:
        salvaged_or_error(data)


def salvaged_or_error(data: bytes) -> None:
    try:
        task = salvage_blob(data, "fuzz")
    except SerializationError:
        return
    assert isinstance(task, CorruptTask) and task.problem == "fuzz"
    strict(task)


@FUZZ
@given(data=tasks.map(encode_task).flatmap(mutated))
def test_a_mutated_envelope_is_salvaged_strictly_or_raises(data: bytes) -> None:
    salvaged_or_error(data)


results = tasks.map(lambda task: TaskResult.from_task(task, TaskStatus.FAILED, error=task.error))
RESULT_FIELDS = tuple(f.name for f in msgspec.structs.fields(TaskResult))


@FUZZ
@given(data=results.map(encode_result).flatmap(mutated) | results.flatmap(lambda r: replaced(r, RESULT_FIELDS)))
def test_a_corrupted_result_decodes_strictly_or_raises(data: bytes) -> None:
    decoded_or_error(decode_result, data)


# -- rows: SQLite columns and Redis script rows ---------------------------------------------------------

#: what a SQLite REAL / BLOB column may hold after corruption.
column_junk = (
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | tasks.map(lambda t: msgspec.msgpack.encode(t.depends_on) + b"")
    | errors.map(msgspec.msgpack.encode)
    | junk.map(msgspec.msgpack.encode)
)
#: SQLite's encoded, time and duration columns (by index in schema.TASK_COLUMNS).
SQLITE_COLUMNS = {"eta": 7, "interval": 8, "timeout": 13, "expires_at": 14, "result_ttl": 15, "depends_on": 16}
SQLITE_COLUMNS |= {"created_at": 17, "updated_at": 18, "started_at": 19, "lease_expires_at": 22, "error": 24}


def _sqlite_row(task: Task) -> list[Any]:
    sqlite = pytest.importorskip("omniq_sqlite.task_queue")
    row = list(sqlite._task_params(task))
    row[6] = "running"
    row.append(1)  # seq
    return row


@FUZZ
@given(task=tasks, changes=st.dictionaries(st.sampled_from(sorted(SQLITE_COLUMNS)), column_junk, min_size=1))
def test_a_corrupted_sqlite_row_reads_strictly_or_raises_and_claims_salvaged(
    task: Task, changes: dict[str, Any]
) -> None:
    sqlite = pytest.importorskip("omniq_sqlite.task_queue")
    row = _sqlite_row(task)
    for name, value in changes.items():
        row[SQLITE_COLUMNS[name]] = value
    try:
        got = sqlite._row_to_task(row)
    except SerializationError:
        pass
    else:
        strict(got)
        assert type(got.depends_on) is tuple and all(type(d) is str for d in got.depends_on)
        assert got.error is None or type(got.error) is TaskError
    leased = sqlite._leased_row_to_task(row)  # a claimed row: never raises, the id is a valid column
    strict(leased)
    assert leased.id == task.id


@FUZZ
@given(task=tasks, blob=st.none() | st.binary(max_size=30), error=st.none() | st.binary(max_size=20))
def test_a_corrupted_redis_row_reads_strictly_or_raises(task: Task, blob: bytes | None, error: bytes | None) -> None:
    codec = pytest.importorskip("omniq_redis._codec")
    row = [blob if blob is not None else encode_task(task), b"running", None, None, b"1", b"tok", None, b"w"]
    row += [None, None, None, error, None]  # ... error, waiting ('wt': absent)
    for read in (codec.task_from_row, codec.leased_task_from_row):
        try:
            got = read(row)
        except SerializationError:
            continue
        strict(got)


def test_salvage_needs_an_id() -> None:
    with pytest.raises(SerializationError, match="id"):
        claimed_task(lambda row: row["boom"], dict[str, Any](), dict)
