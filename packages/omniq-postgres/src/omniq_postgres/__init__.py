"""OmniQ's PostgreSQL backend: task queue, result storage and event storage on asyncpg."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins import lazy_exports

if TYPE_CHECKING:
    from omniq_postgres.event_storage import PostgresEventStorage
    from omniq_postgres.result_storage import PostgresResultStorage
    from omniq_postgres.task_queue import PostgresTaskQueue

__all__ = ["PostgresEventStorage", "PostgresResultStorage", "PostgresTaskQueue"]

# The entry point imports this package (for omniq_postgres.plugin): asyncpg waits until settings select it.
__getattr__ = lazy_exports(
    __name__,
    {
        "PostgresEventStorage": "omniq_postgres.event_storage",
        "PostgresResultStorage": "omniq_postgres.result_storage",
        "PostgresTaskQueue": "omniq_postgres.task_queue",
    },
)
