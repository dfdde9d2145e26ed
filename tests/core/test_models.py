"""Models: envelopes round-trip, corruption is typed, outcomes map to statuses."""

from __future__ import annotations

import pytest

from omniq import SerializationError, Task, TaskError, TaskResult, TaskStatus
from omniq.models import (
    Outcome,
    OutcomeKind,
    decode_result,
    decode_task,
    encode_result,
    encode_task,
    new_id,
    new_ids,
    utcnow,
)


def test_task_envelope_round_trip_keeps_every_field() -> None:
    task = Task(
        id=new_id(),
        func="m.f",
        payload=b"\x00\xffraw",
        queue="q",
        priority=5,
        unique_key="k",
        eta=utcnow(),
        interval=2.5,
        attempts=1,
        max_retries=4,
        timeout=3.0,
        expires_at=utcnow(),
        result_ttl=9.0,
        depends_on=("a", "b"),
        lease_token="t",
        error=TaskError(type="E", message="m", attempt=1),
    )
    assert decode_task(encode_task(task)) == task
    assert task.max_attempts == 5
    assert task.recurring


def test_corrupted_envelopes_raise_serialization_error() -> None:
    with pytest.raises(SerializationError):
        decode_task(b"\x93garbage")
    with pytest.raises(SerializationError):
        decode_result(b"")


def test_result_value_is_never_stored() -> None:
    result = TaskResult(task_id="x", status=TaskStatus.SUCCEEDED, payload=b"p", result={"big": "value"})
    decoded = decode_result(encode_result(result))
    assert decoded.payload == b"p"
    assert decoded.result is not result.result


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (OutcomeKind.SUCCEEDED, TaskStatus.SUCCEEDED),
        (OutcomeKind.FAILED, TaskStatus.FAILED),
        (OutcomeKind.RETRY, TaskStatus.PENDING),
        (OutcomeKind.RELEASE, TaskStatus.PENDING),
        (OutcomeKind.RESCHEDULE, TaskStatus.PENDING),
        (OutcomeKind.EXPIRED, TaskStatus.EXPIRED),
    ],
)
def test_outcome_status(kind: OutcomeKind, status: TaskStatus) -> None:
    assert Outcome(task_id="t", lease_token="l", kind=kind).status is status


def test_terminal_statuses() -> None:
    assert {s for s in TaskStatus if s.is_terminal} == {
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.EXPIRED,
    }


def test_bulk_ids_look_like_single_ids_and_sort_in_creation_order() -> None:
    import time

    before = new_id()
    time.sleep(0.002)
    ids = new_ids(1000)
    assert len(set(ids)) == 1000 and new_ids(0) == []
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert min(ids) > before  # the millisecond prefix orders them
    assert ids == sorted(ids)  # and within a batch, creation order


def test_tasks_and_events_are_not_tracked_by_the_garbage_collector() -> None:
    import gc

    from omniq.models import EventType, TaskEvent

    assert not gc.is_tracked(Task(id=new_id(), func="m.f", status=TaskStatus.RUNNING))
    assert not gc.is_tracked(TaskEvent(task_id=new_id(), type=EventType.ENQUEUED))
