"""Deprecated alias of :mod:`omniq.logs`, kept so that existing imports keep working.

The module was renamed because ``omniq/logging.py`` shadowed the standard library's
:mod:`logging` inside the package. Importing this alias emits a :class:`DeprecationWarning`;
import :mod:`omniq.logs` instead (``omniq.logs.configure()``, ``omniq.logs.bind_task()``).
"""

from __future__ import annotations

import warnings

from omniq.logs import ROOT, TaskLoggerAdapter, bind_task, configure, get_logger

__all__ = ["ROOT", "TaskLoggerAdapter", "bind_task", "configure", "get_logger"]

warnings.warn(
    "omniq.logging is deprecated: import omniq.logs instead (same functions)",
    DeprecationWarning,
    stacklevel=2,
)
