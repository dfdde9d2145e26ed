"""Strict record decoding (omniq._records, exported by omniq.base): what each helper accepts, refuses and keeps."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest

from omniq.base import (
    CorruptTask,
    claimed_task,
    decode_error,
    from_row,
    json_decoder,
    salvage_blob,
    salvage_task,
    task_from_row,
)
from omniq.constants import MAX_DURATION_SECONDS
from omniq.errors import SerializationError
from omniq.models import Task, TaskError, TaskResult, TaskStatus, decode_task, encode_task
from omniq.testing import make_task

NAIVE = datetime(2030, 1, 1)


def _with(task: Task, **fields: object) -> bytes:
    """``task``'s envelope with ``fields`` written as given (msgspec writes a naive datetime without an offset)."""
    return msgspec.msgpack.encode({**msgspec.to_builtins(task, builtin_types=(bytes, datetime)), **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"expires_at": NAIVE},
        {"eta": NAIVE},
        {"created_at": NAIVE},
        {"result_ttl": math.inf},
        {"timeout": math.nan},
        {"interval": MAX_DURATION_SECONDS * 2},
        {"error": "not an error"},
        {"depends_on": 7},
    ],
)
def test_a_stored_envelope_with_a_bad_field_is_a_serialization_error(fields: dict[str, object]) -> None:
    with pytest.raises(SerializationError, match="corrupted task envelope"):
        decode_task(_with(make_task(), **fields))


def test_an_aware_envelope_within_bounds_decodes() -> None:
    task = make_task(result_ttl=MAX_DURATION_SECONDS, timeout=0.5, expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert decode_task(encode_task(task)) == task


def test_a_row_with_a_non_finite_duration_or_a_bad_column_is_a_serialization_error() -> None:
    assert task_from_row(lambda row: make_task(id=row), "x").id == "x"
    with pytest.raises(SerializationError, match="out of range"):
        task_from_row(lambda row: make_task(result_ttl=row), math.inf)
    with pytest.raises(SerializationError, match="OverflowError"):
        task_from_row(lambda row: make_task(eta=datetime.fromtimestamp(row, timezone.utc)), 1e20)
    with pytest.raises(SerializationError, match="corrupted result: KeyError"):
        from_row(lambda row: TaskResult(task_id=row["id"], status=TaskStatus.FAILED), dict[str, Any](), "result")


def test_sub_record_decoders_raise_serialization_error() -> None:
    assert decode_error(msgspec.msgpack.encode(TaskError(type="X", message="m"))) == TaskError(type="X", message="m")
    with pytest.raises(SerializationError, match="corrupted task error"):
        decode_error(b"\xc1")
    with pytest.raises(SerializationError, match="corrupted dependency list"):
        json_decoder(tuple[str, ...], "dependency list")('{"a": 1}')


def test_salvage_keeps_every_valid_field_and_drops_the_others() -> None:
    task = make_task(queue="mail", max_retries=2, result_ttl=60.0, depends_on=("a" * 32,))
    salvaged = salvage_blob(_with(task, expires_at=NAIVE, result_ttl=math.inf, status="running"), "bad")
    assert isinstance(salvaged, CorruptTask) and salvaged.problem == "bad"
    assert (salvaged.id, salvaged.func, salvaged.queue, salvaged.max_retries) == (task.id, task.func, "mail", 2)
    assert (salvaged.status, salvaged.depends_on) == (TaskStatus.RUNNING, task.depends_on)
    assert salvaged.expires_at is None and salvaged.result_ttl is None  # dropped, not kept naive or infinite
    # columns: epoch seconds become aware datetimes
    assert salvage_task({"id": "x", "started_at": 0.0}, "p").started_at == datetime(1970, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("data", [b"\xc1", msgspec.msgpack.encode([1, 2]), msgspec.msgpack.encode({"func": "f"})])
def test_salvage_without_an_id_is_a_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        salvage_blob(data, "bad")


def test_a_claimed_row_that_fails_comes_back_salvaged() -> None:
    def build(row: dict[str, object]) -> Task:
        return make_task(id=row["id"], result_ttl=row["result_ttl"])

    good = claimed_task(build, {"id": "a", "result_ttl": 5.0}, dict)
    assert type(good) is Task and good.result_ttl == 5.0
    bad = claimed_task(build, {"id": "b", "result_ttl": math.inf}, dict)
    assert isinstance(bad, CorruptTask) and bad.id == "b" and bad.result_ttl is None and "out of range" in bad.problem


def test_a_result_can_always_be_built_even_from_an_unchecked_ttl() -> None:
    for ttl in (1e14, math.inf, math.nan):
        assert TaskResult.from_task(Task(id="t", func="f", result_ttl=ttl)).expires_at is None
