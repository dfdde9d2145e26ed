"""Databases as older omniq-sqlite releases left them, for the upgrade tests."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from typing import TYPE_CHECKING

from omniq_sqlite.schema import MIGRATIONS, SCHEMA_VERSION, TASKS

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["make_version_1", "make_version_3"]


def make_version_1(db_path: Path, task_id: str = "old") -> None:
    """A database at schema version 1 (before issue 15: no headers, no registry) holding one PENDING task."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA_VERSION} (version INTEGER PRIMARY KEY, applied_at REAL)")
        for statement in dict(MIGRATIONS)[1]:
            conn.execute(statement)
        conn.execute(f"INSERT INTO {SCHEMA_VERSION} (version, applied_at) VALUES (1, 0)")
        conn.execute(
            f"INSERT INTO {TASKS} (id, func, payload, queue, priority, status, ready_at, paused, attempts, "
            "max_retries, created_at) VALUES (?, 'noop', x'90', 'default', 0, 'pending', ?, 0, 0, 3, ?)",
            (task_id, time.time() - 5, time.time() - 5),
        )


def make_version_3(db_path: Path, task_ids: tuple[str, ...] = ("old",)) -> None:
    """A database at schema version 3 (before issue 18: no ``waiting``, claim index without it) with PENDING tasks."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA_VERSION} (version INTEGER PRIMARY KEY, applied_at REAL)")
        for version, statements in MIGRATIONS[:3]:
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"INSERT INTO {SCHEMA_VERSION} (version, applied_at) VALUES (?, 0)", (version,))
        for task_id in task_ids:
            conn.execute(
                f"INSERT INTO {TASKS} (id, func, payload, queue, priority, status, ready_at, paused, attempts, "
                "max_retries, created_at) VALUES (?, 'noop', x'90', 'default', 0, 'pending', ?, 0, 0, 3, ?)",
                (task_id, time.time() - 5, time.time() - 5),
            )
