"""Entry point of omniq-nats: registers the three NATS JetStream components by name.

Imports nothing heavy: the registry imports ``omniq_nats.task_queue`` (and
with it the ``nats`` driver) only when settings select ``nats``. Each
component declares its capabilities on its class.
"""

from __future__ import annotations

from omniq.hookspecs import BackendSpec, hookimpl


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """The NATS JetStream task queue."""
    return [BackendSpec(name="nats", path="omniq_nats.task_queue:NatsTaskQueue", distribution="omniq-nats")]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """The NATS KV result storage."""
    return [BackendSpec(name="nats", path="omniq_nats.result_storage:NatsResultStorage", distribution="omniq-nats")]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """The NATS stream event storage."""
    return [BackendSpec(name="nats", path="omniq_nats.event_storage:NatsEventStorage", distribution="omniq-nats")]
