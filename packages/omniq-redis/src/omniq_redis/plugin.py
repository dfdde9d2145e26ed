"""Entry point of omniq-redis: registers the three Redis components by name.

Imports nothing heavy: the registry imports ``omniq_redis.task_queue`` (and
with it the ``redis`` driver) only when settings select ``redis``. Each
component declares its capabilities on its class.
"""

from __future__ import annotations

from omniq.hookspecs import BackendSpec, hookimpl


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """The Redis task queue."""
    return [BackendSpec(name="redis", path="omniq_redis.task_queue:RedisTaskQueue", distribution="omniq-redis")]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """The Redis result storage."""
    return [BackendSpec(name="redis", path="omniq_redis.result_storage:RedisResultStorage", distribution="omniq-redis")]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """The Redis event storage."""
    return [BackendSpec(name="redis", path="omniq_redis.event_storage:RedisEventStorage", distribution="omniq-redis")]
