"""OmniQ's embedded default backend: task queue, result and event storage in one SQLite file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins import lazy_exports

if TYPE_CHECKING:
    from omniq_sqlite.event_storage import SQLiteEventStorage
    from omniq_sqlite.result_storage import SQLiteResultStorage
    from omniq_sqlite.task_queue import SQLiteTaskQueue

__all__ = ["SQLiteEventStorage", "SQLiteResultStorage", "SQLiteTaskQueue"]

# Imported on first use, so that loading the plugin module (the entry point) never imports aiosqlite.
__getattr__ = lazy_exports(
    __name__,
    {
        "SQLiteEventStorage": "omniq_sqlite.event_storage",
        "SQLiteResultStorage": "omniq_sqlite.result_storage",
        "SQLiteTaskQueue": "omniq_sqlite.task_queue",
    },
)
