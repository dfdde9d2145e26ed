"""OmniQ's PostgreSQL backend: task queue, result storage and event storage on asyncpg."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniq_postgres.event_storage import PostgresEventStorage
    from omniq_postgres.result_storage import PostgresResultStorage
    from omniq_postgres.task_queue import PostgresTaskQueue

__all__ = ["PostgresEventStorage", "PostgresResultStorage", "PostgresTaskQueue"]

_LAZY = {
    "PostgresEventStorage": "omniq_postgres.event_storage",
    "PostgresResultStorage": "omniq_postgres.result_storage",
    "PostgresTaskQueue": "omniq_postgres.task_queue",
}


def __getattr__(name: str) -> Any:
    # Imported lazily: the entry point loads omniq_postgres.plugin, which imports this package first,
    # and the driver must not be imported until settings select this backend.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omniq_postgres' has no attribute {name!r}")
