"""Logging under the ``omniq`` namespace, configured only on request.

Importing OmniQ configures nothing. Applications call :func:`configure`
(the CLI does) to get a handler on the ``omniq`` logger; libraries embedding
OmniQ leave it alone. :func:`bind_task` returns a logger whose records carry
a task's context, both as ``record.omniq`` (a dict) and in the message.

Two formats: ``"text"`` (one line: time, level, logger, message) and
``"json"`` (:class:`JsonFormatter`: every record one JSON object with
``time``, ``level``, ``logger`` and ``message``, the fields of
``record.omniq`` as more keys — the worker's task lines give ``task_id``,
``task``, ``queue``, ``attempt`` and more — and ``exception`` for a record
logged with one). ``$OMNIQ_LOG_FORMAT`` picks the default, as the
``log_format`` setting and ``omniq worker --log-format`` do.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import MutableMapping
from datetime import datetime, timezone
from typing import Any

from omniq.errors import ConfigurationError

__all__ = ["LOG_FORMATS", "JsonFormatter", "TaskLoggerAdapter", "bind_task", "configure", "get_logger"]

ROOT = "omniq"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: the formats :func:`configure` writes.
LOG_FORMATS = ("text", "json")
#: the record's own attributes: never copied into a JSON line as extra keys.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "omniq"}


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object on one line.

    Keys: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, then
    the fields of ``record.omniq`` (a task's id, name, queue, attempt, ...),
    then any other ``extra=`` attribute, and ``exception`` (the formatted
    traceback) for a record logged with ``exc_info``. A value JSON cannot
    hold is written as its ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "omniq", None)
        if isinstance(fields, dict):
            line.update(fields)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def get_logger(name: str = "") -> logging.Logger:
    """Return ``omniq`` or ``omniq.<name>``."""
    return logging.getLogger(f"{ROOT}.{name}" if name else ROOT)


def configure(
    level: str | int | None = None,
    *,
    fmt: str = _FORMAT,
    stream: Any = None,
    log_format: str | None = None,
) -> logging.Logger:
    """Attach one stream handler to the ``omniq`` logger and set its level.

    Args:
        level: a level name or number; defaults to ``$OMNIQ_LOG_LEVEL``, then WARNING.
        fmt: the record format of the ``"text"`` format.
        stream: where to write (stderr by default).
        log_format: ``"text"`` or ``"json"`` (one JSON object per line, see
            :class:`JsonFormatter`); defaults to ``$OMNIQ_LOG_FORMAT``, then text.

    Calling it again replaces the handler it installed, never stacking them.
    """
    if level is None:
        level = os.environ.get("OMNIQ_LOG_LEVEL", "WARNING")
    if isinstance(level, str):
        name = level.strip().upper()
        if name not in _LEVELS:
            raise ConfigurationError(f"OMNIQ_LOG_LEVEL={level!r} is not valid: expected one of {', '.join(_LEVELS)}")
        level = getattr(logging, name)
    if log_format is None:
        log_format = os.environ.get("OMNIQ_LOG_FORMAT") or "text"
    log_format = log_format.strip().lower()
    if log_format not in LOG_FORMATS:
        raise ConfigurationError(
            f"OMNIQ_LOG_FORMAT={log_format!r} is not valid: expected one of {', '.join(LOG_FORMATS)}"
        )
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        if getattr(handler, "_omniq_default", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(fmt))
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
