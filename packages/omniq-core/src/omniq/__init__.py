"""OmniQ: an async-first, sync-wrapped task queue with pluggable backends."""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from omniq._options import EnqueueOptions
from omniq.app import AsyncOmniQ
from omniq.config import BackendType, Settings
from omniq.context import TaskContext, current_task, report_progress
from omniq.errors import (
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    ConfigurationError,
    NotSupportedError,
    OmniQError,
    PayloadTooLargeError,
    SerializationError,
    TaskArgumentError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnknownTaskError,
)
from omniq.hookspecs import hookimpl
from omniq.models import EventType, Task, TaskError, TaskEvent, TaskProgress, TaskResult, TaskStatus
from omniq.retrying import Retry
from omniq.scheduling import Schedule
from omniq.sync import OmniQ
from omniq.workflows import (
    Signature,
    WorkflowFailed,
    WorkflowHandle,
    WorkflowNotFinished,
    chain,
    chord,
    group,
)

if TYPE_CHECKING:
    from omniq.errors import LeaseLostError as LeaseLostError, ResultTimeoutError as ResultTimeoutError  # deprecated
else:

    def __getattr__(name: str) -> Any:
        """``LeaseLostError`` and ``ResultTimeoutError``: deprecated (never raised), importable with a warning."""
        if name in _DEPRECATED_ERRORS:
            warnings.warn(
                f"omniq.{name} is deprecated and never raised: {_DEPRECATED_ERRORS[name]}",
                DeprecationWarning,
                stacklevel=2,
            )
            from omniq import errors

            return getattr(errors, name)
        raise AttributeError(f"module 'omniq' has no attribute {name!r}")


#: exported by the seed project, never raised: why each is gone.
_DEPRECATED_ERRORS = {
    "LeaseLostError": "a worker that loses a lease drops that attempt's outcome and logs it",
    "ResultTimeoutError": "get_result(wait=True, timeout=...) returns None when the time runs out",
}

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
    "EnqueueOptions",
    "EventType",
    "NotSupportedError",
    "OmniQError",
    "PayloadTooLargeError",
    "Retry",
    "Schedule",
    "Signature",
    "SerializationError",
    "Task",
    "TaskArgumentError",
    "TaskContext",
    "TaskError",
    "TaskEvent",
    "TaskNotFoundError",
    "TaskProgress",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "UnknownTaskError",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowNotFinished",
    "__version__",
    "chain",
    "chord",
    "current_task",
    "group",
    "hookimpl",
    "report_progress",
]
