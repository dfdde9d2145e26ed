"""OmniQ's Redis backend: task queue, result storage and event storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniq_redis.event_storage import RedisEventStorage
    from omniq_redis.result_storage import RedisResultStorage
    from omniq_redis.task_queue import RedisTaskQueue

__all__ = ["RedisEventStorage", "RedisResultStorage", "RedisTaskQueue"]

_LAZY = {
    "RedisEventStorage": "omniq_redis.event_storage",
    "RedisResultStorage": "omniq_redis.result_storage",
    "RedisTaskQueue": "omniq_redis.task_queue",
}


def __getattr__(name: str) -> Any:
    # Imported lazily: the entry point loads omniq_redis.plugin, which imports this package first,
    # and the driver must not be imported until settings select this backend.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omniq_redis' has no attribute {name!r}")
