"""Logging under the ``omniq`` namespace, configured only on request.

Importing OmniQ configures nothing. Applications call :func:`configure`
(the CLI does) to get a handler on the ``omniq`` logger; libraries embedding
OmniQ leave it alone. :func:`bind_task` returns a logger whose records carry
a task's context, both as ``record.omniq`` (a dict) and in the message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import Any

from omniq.errors import ConfigurationError

__all__ = ["TaskLoggerAdapter", "bind_task", "configure", "get_logger"]

ROOT = "omniq"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def get_logger(name: str = "") -> logging.Logger:
    """Return ``omniq`` or ``omniq.<name>``."""
    return logging.getLogger(f"{ROOT}.{name}" if name else ROOT)


def configure(level: str | int | None = None, *, fmt: str = _FORMAT, stream: Any = None) -> logging.Logger:
    """Attach one stream handler to the ``omniq`` logger and set its level.

    Args:
        level: a level name or number; defaults to ``$OMNIQ_LOG_LEVEL``, then WARNING.
        fmt: the record format.
        stream: where to write (stderr by default).

    Calling it again replaces the handler it installed, never stacking them.
    """
    if level is None:
        level = os.environ.get("OMNIQ_LOG_LEVEL", "WARNING")
    if isinstance(level, str):
        name = level.strip().upper()
        if name not in _LEVELS:
            raise ConfigurationError(f"OMNIQ_LOG_LEVEL={level!r} is not valid: expected one of {', '.join(_LEVELS)}")
        level = getattr(logging, name)
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        if getattr(handler, "_omniq_default", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    handler._omniq_default = True  # type: ignore[attr-defined]  # marks the handler this function owns
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger


class TaskLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only from 3.11 on
    """A logger that tags every record with a task's context."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Prefix the message with ``[key=value ...]`` and attach ``record.omniq``."""
        context = dict(self.extra or {})
        extra = kwargs.setdefault("extra", {})
        extra["omniq"] = context
        tags = " ".join(f"{key}={value}" for key, value in context.items())
        return f"[{tags}] {msg}", kwargs


def bind_task(name_or_id: str, **context: Any) -> TaskLoggerAdapter:
    """Return a logger under ``omniq.task`` that tags each record with the task and ``context``.

    Example::

        log = bind_task("send_email", task_id=task_id, attempt=2)
        log.info("sent")   # -> "[task=send_email task_id=... attempt=2] sent"
    """
    return TaskLoggerAdapter(logging.getLogger(f"{ROOT}.task"), {"task": name_or_id, **context})
