"""Entry point of omniq-redis: registers the three Redis components by name.

Imports nothing heavy: the registry imports ``omniq_redis.task_queue`` (and
with it the ``redis`` driver) only when settings select ``redis``.
"""

from __future__ import annotations

from omniq.base import Capability
from omniq.hookspecs import BackendSpec, hookimpl

_SERVER = frozenset({Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.DURABLE})


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """The Redis task queue."""
    return [
        BackendSpec(
            name="redis",
            path="omniq_redis.task_queue:RedisTaskQueue",
            distribution="omniq-redis",
            capabilities=_SERVER | {Capability.BLOCKING_WAIT, Capability.FUSED_RESULTS, Capability.FORK_SAFE},
        )
    ]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """The Redis result storage."""
    return [
        BackendSpec(
            name="redis",
            path="omniq_redis.result_storage:RedisResultStorage",
            distribution="omniq-redis",
            capabilities=_SERVER | {Capability.BLOCKING_WAIT},
        )
    ]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """The Redis event storage."""
    return [
        BackendSpec(
            name="redis",
            path="omniq_redis.event_storage:RedisEventStorage",
            distribution="omniq-redis",
            capabilities=_SERVER,
        )
    ]
