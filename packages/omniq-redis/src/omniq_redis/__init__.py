"""OmniQ's Redis backend: task queue, result storage and event storage."""

from __future__ import annotations

from omniq_redis.event_storage import RedisEventStorage
from omniq_redis.result_storage import RedisResultStorage
from omniq_redis.task_queue import RedisTaskQueue

__all__ = ["RedisEventStorage", "RedisResultStorage", "RedisTaskQueue"]
