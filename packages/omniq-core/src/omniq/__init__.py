"""OmniQ: an async-first, sync-wrapped task queue with pluggable backends."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from omniq.app import AsyncOmniQ
from omniq.config import BackendType, Settings
from omniq.errors import (
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    ConfigurationError,
    LeaseLostError,
    OmniQError,
    PayloadTooLargeError,
    ResultTimeoutError,
    SerializationError,
    TaskArgumentError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnknownTaskError,
)
from omniq.hookspecs import hookimpl
from omniq.models import EventType, Schedule, Task, TaskError, TaskEvent, TaskResult, TaskStatus
from omniq.sync import OmniQ

try:
    __version__ = version("omniq-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "AsyncOmniQ",
    "BackendType",
    "OmniQ",
    "Settings",
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "ConfigurationError",
    "EventType",
    "LeaseLostError",
    "OmniQError",
    "PayloadTooLargeError",
    "ResultTimeoutError",
    "Schedule",
    "SerializationError",
    "Task",
    "TaskArgumentError",
    "TaskError",
    "TaskEvent",
    "TaskNotFoundError",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "UnknownTaskError",
    "__version__",
    "hookimpl",
]
