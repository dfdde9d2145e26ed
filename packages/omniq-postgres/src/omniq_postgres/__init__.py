"""OmniQ's PostgreSQL backend: task queue, result storage and event storage on asyncpg."""

from __future__ import annotations

from omniq_postgres.event_storage import PostgresEventStorage
from omniq_postgres.result_storage import PostgresResultStorage
from omniq_postgres.task_queue import PostgresTaskQueue

__all__ = ["PostgresEventStorage", "PostgresResultStorage", "PostgresTaskQueue"]
