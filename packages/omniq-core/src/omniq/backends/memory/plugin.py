"""Entry point of the memory backend: registers the three memory components by name.

Declared by omniq-core's own pyproject (``memory = "omniq.backends.memory.plugin"``):
the core's backends register like any third party's.
"""

from __future__ import annotations

from omniq.hookspecs import BackendSpec, hookimpl


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """The memory task queue."""
    return [
        BackendSpec(
            name="memory",
            path="omniq.backends.memory.task_queue:MemoryTaskQueue",
            distribution="omniq-core",
        )
    ]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """The memory result storage."""
    return [
        BackendSpec(
            name="memory",
            path="omniq.backends.memory.result_storage:MemoryResultStorage",
            distribution="omniq-core",
        )
    ]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """The memory event storage."""
    return [
        BackendSpec(
            name="memory",
            path="omniq.backends.memory.event_storage:MemoryEventStorage",
            distribution="omniq-core",
        )
    ]
