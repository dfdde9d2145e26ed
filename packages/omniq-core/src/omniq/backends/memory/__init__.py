"""OmniQ's in-process backend: task queue, result storage and event storage in memory.

Components built on one :class:`MemoryStore` (or on the same URL, the name of
a process-wide store) share its data. For tests and single-process apps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins import lazy_exports

if TYPE_CHECKING:
    from omniq.backends.memory.event_storage import MemoryEventStorage
    from omniq.backends.memory.result_storage import MemoryResultStorage
    from omniq.backends.memory.store import MemoryStore
    from omniq.backends.memory.task_queue import MemoryTaskQueue

__all__ = ["MemoryEventStorage", "MemoryResultStorage", "MemoryStore", "MemoryTaskQueue"]

__getattr__ = lazy_exports(
    __name__,
    {
        "MemoryEventStorage": "omniq.backends.memory.event_storage",
        "MemoryResultStorage": "omniq.backends.memory.result_storage",
        "MemoryStore": "omniq.backends.memory.store",
        "MemoryTaskQueue": "omniq.backends.memory.task_queue",
    },
)
