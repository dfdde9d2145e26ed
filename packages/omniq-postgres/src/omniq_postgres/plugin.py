"""Registers the ``postgres`` backend with OmniQ (entry point ``omniq: postgres``).

Imports nothing heavy: asyncpg is loaded only when settings select the backend.
Capabilities are declared by the classes themselves.
"""

from __future__ import annotations

from omniq.hookspecs import BackendSpec, hookimpl

_DIST = "omniq-postgres"


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """The PostgreSQL task queue (SKIP LOCKED claims, LISTEN/NOTIFY, fused results and events)."""
    return [BackendSpec(name="postgres", path="omniq_postgres.task_queue:PostgresTaskQueue", distribution=_DIST)]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """The PostgreSQL result storage (``wait`` woken by NOTIFY)."""
    return [
        BackendSpec(name="postgres", path="omniq_postgres.result_storage:PostgresResultStorage", distribution=_DIST)
    ]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """The PostgreSQL event storage (batched inserts)."""
    return [BackendSpec(name="postgres", path="omniq_postgres.event_storage:PostgresEventStorage", distribution=_DIST)]
