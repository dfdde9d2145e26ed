"""OmniQ's embedded default backend: task queue, result and event storage in one SQLite file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniq_sqlite.event_storage import SQLiteEventStorage
    from omniq_sqlite.result_storage import SQLiteResultStorage
    from omniq_sqlite.task_queue import SQLiteTaskQueue

__all__ = ["SQLiteEventStorage", "SQLiteResultStorage", "SQLiteTaskQueue"]

_LAZY = {
    "SQLiteEventStorage": "omniq_sqlite.event_storage",
    "SQLiteResultStorage": "omniq_sqlite.result_storage",
    "SQLiteTaskQueue": "omniq_sqlite.task_queue",
}


def __getattr__(name: str) -> Any:
    # Imported lazily so that loading the plugin module (entry point) stays cheap.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omniq_sqlite' has no attribute {name!r}")
