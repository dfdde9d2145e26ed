"""Registers the ``postgres`` backend with OmniQ (entry point ``omniq: postgres``).

Imports nothing heavy: asyncpg is loaded only when settings select the backend.
"""

from __future__ import annotations

from omniq.base import Capability
from omniq.hookspecs import BackendSpec, hookimpl

_DIST = "omniq-postgres"
_SHARED = frozenset({Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.DURABLE})


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """The PostgreSQL task queue (SKIP LOCKED claims, LISTEN/NOTIFY, fused results)."""
    return [
        BackendSpec(
            name="postgres",
            path="omniq_postgres.task_queue:PostgresTaskQueue",
            distribution=_DIST,
            capabilities=_SHARED | {Capability.BLOCKING_WAIT, Capability.FUSED_RESULTS},
        )
    ]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """The PostgreSQL result storage (``wait`` woken by NOTIFY)."""
    return [
        BackendSpec(
            name="postgres",
            path="omniq_postgres.result_storage:PostgresResultStorage",
            distribution=_DIST,
            capabilities=_SHARED | {Capability.BLOCKING_WAIT},
        )
    ]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """The PostgreSQL event storage (batched inserts)."""
    return [
        BackendSpec(
            name="postgres",
            path="omniq_postgres.event_storage:PostgresEventStorage",
            distribution=_DIST,
            capabilities=_SHARED,
        )
    ]
