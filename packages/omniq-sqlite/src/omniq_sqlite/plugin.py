"""Registers the SQLite backend for all three components (imports nothing heavy)."""

from __future__ import annotations

from omniq import hookimpl
from omniq.base import Capability
from omniq.hookspecs import BackendSpec

_DISTRIBUTION = "omniq-sqlite"
_COMMON = frozenset({Capability.MULTI_PROCESS, Capability.DURABLE})


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """The SQLite task queue."""
    return [
        BackendSpec(
            name="sqlite",
            path="omniq_sqlite.task_queue:SQLiteTaskQueue",
            distribution=_DISTRIBUTION,
            capabilities=_COMMON | {Capability.BLOCKING_WAIT, Capability.FUSED_RESULTS, Capability.FORK_SAFE},
        )
    ]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """The SQLite result storage."""
    return [
        BackendSpec(
            name="sqlite",
            path="omniq_sqlite.result_storage:SQLiteResultStorage",
            distribution=_DISTRIBUTION,
            capabilities=_COMMON | {Capability.BLOCKING_WAIT, Capability.FUSED_RESULTS},
        )
    ]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """The SQLite event storage."""
    return [
        BackendSpec(
            name="sqlite",
            path="omniq_sqlite.event_storage:SQLiteEventStorage",
            distribution=_DISTRIBUTION,
            capabilities=_COMMON,
        )
    ]
