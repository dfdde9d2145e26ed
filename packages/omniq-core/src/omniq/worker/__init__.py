"""Workers: the pool that claims and runs tasks, and the executors that run functions.

The pool is imported on first use, so that loading the built-in task log
observer (``omniq.worker.task_log``, registered with every plugin manager)
does not import the pool and its executors in a process that only enqueues.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniq.worker.pool import AsyncWorkerPool

__all__ = ["AsyncWorkerPool"]


def __getattr__(name: str) -> Any:
    # Not omniq.plugins.lazy_exports: the plugin manager imports this package (task_log).
    if name == "AsyncWorkerPool":
        return importlib.import_module("omniq.worker.pool").AsyncWorkerPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
