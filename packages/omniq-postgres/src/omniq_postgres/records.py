"""Rows and models: a task, result or event read from its row, and written as statement parameters.

Reads are strict (a corrupted column raises :class:`~omniq.errors.SerializationError`),
except where a worker must still be handed the task to fail it: a row just
claimed or recovered comes back salvaged (:func:`leased_task_from_row`).
JSON columns (``error``, ``depends_on``) travel as text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from omniq.base import claimed_task, from_row, json_decoder, task_from_row
from omniq.flow_control import Limits
from omniq.models import EventType, Task, TaskError, TaskEvent, TaskResult, TaskStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import asyncpg

__all__ = [
    "NO_DEPENDENCIES",
    "claim_order",
    "decode_error",
    "encode_error",
    "event_from_row",
    "insert_columns",
    "limit_columns",
    "leased_task_from_row",
    "result_arrays",
    "result_from_row",
    "strict_task_from_row",
]

_json = msgspec.json.Encoder()
_decode_error = json_decoder(TaskError, "task error")
_decode_deps = json_decoder(tuple[str, ...], "dependency list")
_decode_headers = json_decoder(dict[str, str], "task headers")

#: the encoded ``depends_on`` of a task without dependencies: one shared object, so a batch is
#: told apart from one with dependencies by identity checks (``list.count`` in C).
NO_DEPENDENCIES = "[]"


def encode_error(error: TaskError | None) -> str | None:
    """A TaskError as JSON text for a ``jsonb`` column."""
    return None if error is None else _json.encode(error).decode()


def decode_error(text: str | None) -> TaskError | None:
    """The inverse of :func:`encode_error` (SerializationError when the column is corrupted)."""
    return None if text is None else _decode_error(text)


# -- tasks ----------------------------------------------------------------------------------------


def strict_task_from_row(row: asyncpg.Record) -> Task:
    """The task of a row, strictly (SerializationError when a column is corrupted)."""
    return task_from_row(_build_task, row)


def leased_task_from_row(row: asyncpg.Record) -> Task:
    """The task of a row just claimed or recovered: a corrupted one comes back salvaged, for the worker to fail."""
    return claimed_task(_build_task, row, dict)


def claim_order(task: Task, row: asyncpg.Record) -> tuple[int, Any, int]:
    """Sort key of a claimed task: priority, then ready time, then enqueue order."""
    return (-task.priority, row["ready_at"], row["seq"])


def _build_task(row: asyncpg.Record) -> Task:
    depends = row["depends_on"]
    task = Task(
        id=row["id"],
        func=row["func"],
        payload=row["payload"],
        queue=row["queue"],
        priority=row["priority"],
        unique_key=row["unique_key"],
        status=TaskStatus(row["status"]),
        eta=row["eta"],
        interval=row["interval_seconds"],
        cron=row["cron"],
        paused=row["paused"],
        attempts=row["attempts"],
        max_retries=row["max_retries"],
        timeout=row["timeout"],
        expires_at=row["expires_at"],
        result_ttl=row["result_ttl"],
        depends_on=() if depends == NO_DEPENDENCIES else _decode_deps(depends),
        waiting=row["waiting"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        worker_id=row["worker_id"],
        error=decode_error(row["error"]),
        headers=None if (headers := row["headers"]) is None else _decode_headers(headers),
    )
    key = row["limit_key"]
    if key is not None:  # a limited task (the columns are NULL for every other)
        task.limits = Limits(
            key=key, concurrency=row["limit_concurrency"], rate=row["limit_rate"], burst=row["limit_burst"]
        )
        task.held = row["held"] is True
        task.rate_reserved = row["rate_reserved"] is True
    return task


def insert_columns(tasks: Sequence[Task]) -> list[list[Any]]:
    """One value list per column of the enqueue INSERT (:data:`omniq_postgres.enqueue.INSERT_COLUMNS`)."""
    depends = [t.depends_on for t in tasks]
    errors = [t.error for t in tasks]
    return [
        [t.id for t in tasks],
        [t.func for t in tasks],
        [t.payload for t in tasks],
        [t.queue for t in tasks],
        [t.priority for t in tasks],
        [t.unique_key for t in tasks],
        [t.paused for t in tasks],
        [t.eta for t in tasks],
        [t.interval for t in tasks],
        [t.cron for t in tasks],
        [t.attempts for t in tasks],
        [t.max_retries for t in tasks],
        [t.timeout for t in tasks],
        [t.expires_at for t in tasks],
        [t.result_ttl for t in tasks],
        # JSON is encoded once when the whole batch shares one value (the usual case).
        _encoded(depends, _encode_depends),
        [t.created_at for t in tasks],
        _encoded(errors, encode_error),
        _encoded([t.headers for t in tasks], _encode_headers),
    ]


def limit_columns(tasks: Sequence[Task]) -> list[list[Any]] | None:
    """The value lists of the limit columns (:data:`omniq_postgres.enqueue.LIMIT_COLUMNS`); None when no task has limits."""
    limits = [t.limits for t in tasks]
    if limits.count(None) == len(limits):  # a C loop: the usual batch goes in without these columns
        return None
    return [
        [None if lim is None else lim.key for lim in limits],
        [None if lim is None else lim.concurrency for lim in limits],
        [None if lim is None else lim.rate for lim in limits],
        [None if lim is None else lim.burst for lim in limits],
    ]


def _encode_depends(depends: tuple[str, ...]) -> str:
    return NO_DEPENDENCIES if not depends else _json.encode(list(depends)).decode()


def _encode_headers(headers: dict[str, str] | None) -> str | None:
    return None if headers is None else _json.encode(headers).decode()


def _encoded(values: list[Any], encode: Callable[[Any], Any]) -> list[Any]:
    if values.count(values[0]) == len(values):
        return [encode(values[0])] * len(values)
    return [encode(value) for value in values]


# -- results and events ---------------------------------------------------------------------------


def result_from_row(row: asyncpg.Record) -> TaskResult:
    """The result of a row (SerializationError when a column is corrupted)."""
    return from_row(_build_result, row, "result")


def _build_result(row: asyncpg.Record) -> TaskResult:
    return TaskResult(
        task_id=row["task_id"],
        status=TaskStatus(row["status"]),
        payload=row["payload"],
        error=decode_error(row["error"]),
        attempts=row["attempts"],
        func=row["func"],
        queue=row["queue"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        expires_at=row["expires_at"],
    )


def result_arrays(results: Sequence[TaskResult]) -> list[list[Any]]:
    """Column arrays (:data:`omniq_postgres.sql.RESULT_COLUMNS` order) for an ``unnest`` upsert."""
    return [
        [r.task_id for r in results],
        [r.status.value for r in results],
        [r.payload for r in results],
        [encode_error(r.error) for r in results],
        [r.attempts for r in results],
        [r.func for r in results],
        [r.queue for r in results],
        [r.started_at for r in results],
        [r.finished_at for r in results],
        [r.expires_at for r in results],
    ]


def event_from_row(row: asyncpg.Record) -> TaskEvent:
    """The event of a row (SerializationError when a column is corrupted)."""
    return from_row(_build_event, row, "event")


def _build_event(row: asyncpg.Record) -> TaskEvent:
    return TaskEvent(
        task_id=row["task_id"],
        type=EventType(row["type"]),
        timestamp=row["ts"],
        queue=row["queue"],
        func=row["func"],
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        message=row["message"],
    )
