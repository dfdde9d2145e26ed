"""Task rows: a Task as the parameters of its INSERT, a row of ``schema.TASK_COLUMNS`` as a Task.

Rows are read strictly (SerializationError when a column is corrupted),
except a row just claimed or recovered, which comes back salvaged
(:class:`~omniq.base.CorruptTask`) for the worker to fail.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from omniq.base import claimed_task, decode_error, msgpack_decoder, task_from_row
from omniq.errors import SerializationError
from omniq.flow_control import Limits
from omniq.models import Task, TaskStatus
from omniq_sqlite import schema

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEPENDS_ON",
    "LIMITS",
    "RATE_RESERVED",
    "SEQ",
    "build_task",
    "chunks",
    "claim_order",
    "encoder",
    "from_ts",
    "leased_row_to_task",
    "limits_of",
    "row_to_task",
    "task_params",
    "to_ts",
    "where",
]

_UTC = timezone.utc
#: SQLite accepts 32766 host parameters since 3.32; stay well below for IN lists.
CHUNK = 500
encoder = msgspec.msgpack.Encoder()
_decode_deps = msgpack_decoder(tuple[str, ...], "dependency list")
_decode_headers = msgpack_decoder(dict[str, str], "task headers")
_decode_limits = msgpack_decoder(Limits, "task limits")
#: Task field names in schema.TASK_COLUMNS order (a salvaged row keeps the valid ones).
_FIELDS = tuple(name.rsplit(" AS ", 1)[-1].strip() for name in schema.TASK_COLUMNS.split(","))
_STATUS = {status.value: status for status in TaskStatus}
#: index of seq in schema.TASK_COLUMNS.
SEQ = 25
#: index of limits in schema.TASK_COLUMNS (NULL for a task without limits).
LIMITS = 27
#: index of rate_reserved in schema.TASK_COLUMNS.
RATE_RESERVED = 29
#: index of the encoded depends_on in task_params (NULL for a task without dependencies).
DEPENDS_ON = 17


def to_ts(value: datetime | None) -> float | None:
    """Datetime -> epoch seconds (REAL column)."""
    return None if value is None else value.timestamp()


def from_ts(value: float | None) -> datetime | None:
    """Epoch seconds -> aware UTC datetime."""
    return None if value is None else datetime.fromtimestamp(value, _UTC)


def chunks(items: list[Any], size: int = CHUNK) -> list[list[Any]]:
    """Split ``items`` into lists of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def row_to_task(row: Sequence[Any]) -> Task:
    """The task of a row, strictly (SerializationError when a column is corrupted)."""
    return task_from_row(build_task, row)


def leased_row_to_task(row: Sequence[Any]) -> Task:
    """The task of a row just claimed or recovered: a corrupted one comes back salvaged, for the worker to fail."""
    return claimed_task(build_task, row, _raw_fields)


def _raw_fields(row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(_FIELDS, row, strict=False))


def build_task(row: Sequence[Any]) -> Task:
    """The task of a row, unchecked (a corrupted column raises whatever it raises)."""
    error, deps, headers, limits = row[24], row[16], row[26], row[27]
    return Task(
        id=row[0],
        func=row[1],
        payload=row[2],
        queue=row[3],
        priority=row[4],
        unique_key=row[5],
        status=_STATUS[row[6]],
        eta=from_ts(row[7]),
        interval=row[8],
        cron=row[9],
        paused=bool(row[10]),
        attempts=row[11],
        max_retries=row[12],
        timeout=row[13],
        expires_at=from_ts(row[14]),
        result_ttl=row[15],
        depends_on=_decode_deps(deps) if deps is not None else (),
        created_at=datetime.fromtimestamp(row[17], _UTC),
        updated_at=from_ts(row[18]),
        started_at=from_ts(row[19]),
        finished_at=from_ts(row[20]),
        lease_token=row[21],
        lease_expires_at=from_ts(row[22]),
        worker_id=row[23],
        error=decode_error(error) if error is not None else None,
        headers=_decode_headers(headers) if headers is not None else None,
        limits=_decode_limits(limits) if limits is not None else None,
        held=bool(row[28]),
        rate_reserved=bool(row[29]),
        waiting=row[30],
    )


def claim_order(row: Sequence[Any]) -> tuple[int, float, int]:
    """Sort key of claimed rows: priority first, then ready time, then arrival."""
    return (-row[4], row[7] if row[7] is not None else row[17], row[SEQ])


def limits_of(row: Sequence[Any]) -> Limits | None:
    """The limits of a claimed row, decoded alone (None when the column is corrupted: the row is salvaged later)."""
    try:
        return _decode_limits(row[LIMITS])
    except (SerializationError, TypeError):  # TypeError: not bytes at all
        return None


def task_params(task: Task) -> tuple[Any, ...]:
    """The parameters of ``schema.INSERT_TASK`` for a new PENDING task (ready at its eta, else its ``created_at``)."""
    created = task.created_at.timestamp()
    eta = to_ts(task.eta)
    limits = task.limits
    return (
        task.id,
        task.func,
        task.payload,
        task.queue,
        task.priority,
        task.unique_key,
        "pending",
        eta,
        eta if eta is not None else created,
        task.interval,
        task.cron,
        int(task.paused),
        task.attempts,
        task.max_retries,
        task.timeout,
        to_ts(task.expires_at),
        task.result_ttl,
        encoder.encode(task.depends_on) if task.depends_on else None,
        created,
        to_ts(task.updated_at),
        to_ts(task.started_at),
        to_ts(task.finished_at),
        None,
        None,
        task.worker_id,
        encoder.encode(task.error) if task.error is not None else None,
        encoder.encode(task.headers) if task.headers is not None else None,
        encoder.encode(limits) if limits is not None else None,
        limits.key if limits is not None else None,
        limits.concurrency if limits is not None else None,
    )


def where(
    status: TaskStatus | None, queue: str | None, statuses: Sequence[TaskStatus] | None = None
) -> tuple[str, list[Any]]:
    """A WHERE clause (or "") and its parameters for status / queue filters."""
    clauses: list[str] = []
    params: list[Any] = []
    if status is not None:
        clauses.append("status = ?")
        params.append(TaskStatus(status).value)
    if statuses is not None:
        clauses.append(f"status IN {schema.placeholders(len(statuses))}")
        params.extend(TaskStatus(s).value for s in statuses)
    if queue is not None:
        clauses.append("queue = ?")
        params.append(queue)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
