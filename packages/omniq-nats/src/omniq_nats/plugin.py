"""Entry point of the NATS backend: hook implementations only, nothing heavy imported."""

from __future__ import annotations

from omniq import hookimpl
from omniq.base import Capability
from omniq.hookspecs import BackendSpec

_DIST = "omniq-nats"
_SHARED = frozenset({Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.DURABLE})


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """The NATS JetStream task queue."""
    capabilities = _SHARED | {Capability.BLOCKING_WAIT, Capability.FUSED_RESULTS}
    return [BackendSpec("nats", "omniq_nats.task_queue:NatsTaskQueue", _DIST, frozenset(capabilities))]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """The NATS KV result storage."""
    capabilities = _SHARED | {Capability.BLOCKING_WAIT}
    return [BackendSpec("nats", "omniq_nats.result_storage:NatsResultStorage", _DIST, frozenset(capabilities))]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """The NATS stream event storage."""
    return [BackendSpec("nats", "omniq_nats.event_storage:NatsEventStorage", _DIST, _SHARED)]
