"""OmniQ's Redis backend: task queue, result storage and event storage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins import lazy_exports

if TYPE_CHECKING:
    from omniq_redis.event_storage import RedisEventStorage
    from omniq_redis.result_storage import RedisResultStorage
    from omniq_redis.task_queue import RedisTaskQueue

__all__ = ["RedisEventStorage", "RedisResultStorage", "RedisTaskQueue"]

# The entry point loads omniq_redis.plugin, which imports this package first: the driver is
# imported only when settings select this backend.
__getattr__ = lazy_exports(
    __name__,
    {
        "RedisEventStorage": "omniq_redis.event_storage",
        "RedisResultStorage": "omniq_redis.result_storage",
        "RedisTaskQueue": "omniq_redis.task_queue",
    },
)
