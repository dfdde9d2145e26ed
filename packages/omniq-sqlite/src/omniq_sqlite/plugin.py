"""Registers the SQLite backend for all three components (imports nothing heavy)."""

from __future__ import annotations

from omniq import hookimpl
from omniq.hookspecs import BackendSpec

_DISTRIBUTION = "omniq-sqlite"


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """The SQLite task queue."""
    return [BackendSpec(name="sqlite", path="omniq_sqlite.task_queue:SQLiteTaskQueue", distribution=_DISTRIBUTION)]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """The SQLite result storage."""
    return [
        BackendSpec(name="sqlite", path="omniq_sqlite.result_storage:SQLiteResultStorage", distribution=_DISTRIBUTION)
    ]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """The SQLite event storage."""
    return [
        BackendSpec(name="sqlite", path="omniq_sqlite.event_storage:SQLiteEventStorage", distribution=_DISTRIBUTION)
    ]
