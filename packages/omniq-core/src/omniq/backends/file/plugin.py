"""Entry point of the file backend: registers the three file components by name.

Declared by omniq-core's own pyproject (``file = "omniq.backends.file.plugin"``):
the core's backends register like any third party's. fsspec, needed only for
URLs other than local directories, is imported when such a URL is opened.
"""

from __future__ import annotations

from omniq.hookspecs import BackendSpec, hookimpl


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """The file task queue."""
    return [
        BackendSpec(
            name="file",
            path="omniq.backends.file.task_queue:FileTaskQueue",
            distribution="omniq-core",
        )
    ]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """The file result storage."""
    return [
        BackendSpec(
            name="file",
            path="omniq.backends.file.result_storage:FileResultStorage",
            distribution="omniq-core",
        )
    ]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """The file event storage."""
    return [
        BackendSpec(
            name="file",
            path="omniq.backends.file.event_storage:FileEventStorage",
            distribution="omniq-core",
        )
    ]
