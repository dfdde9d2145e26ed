"""One shallow tree of errors under :class:`OmniQError`, grouped by cause.

Each subclasses the matching builtin where one exists, so generic handlers
(``except ValueError``, ``except TimeoutError``) keep working. Backends
translate their driver's exceptions into these at the boundary (see
:func:`omniq.base.map_exceptions`), so a ``redis.ConnectionError`` never
reaches user code. Messages never contain passwords: URLs go through
:func:`redact_url` first.
"""

from __future__ import annotations

import re

__all__ = [
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "ConfigurationError",
    "LeaseLostError",
    "OmniQError",
    "PayloadTooLargeError",
    "ResultTimeoutError",
    "SerializationError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "UnknownTaskError",
    "redact_url",
]

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_PASSWORD_IN_QUERY = re.compile(r"(?i)(?P<key>[?&](?:password|pass|pwd|secret|token)=)[^&\s]*")


def redact_url(text: str) -> str:
    """Replace every password in URLs inside ``text`` with ``***``.

    >>> redact_url("redis://user:s3cret@host:6379/0")
    'redis://user:***@host:6379/0'
    """
    text = _PASSWORD_IN_URL.sub(r"\g<scheme>\g<user>:***@", text)
    return _PASSWORD_IN_QUERY.sub(r"\g<key>***", text)


class OmniQError(Exception):
    """Base class of every error OmniQ raises."""


class ConfigurationError(OmniQError, ValueError):
    """A setting is malformed; the message names the setting and what it accepts."""


class BackendNotFoundError(ConfigurationError):
    """No backend of that name is installed; the message lists the installed ones."""


class BackendError(OmniQError):
    """An engine failed in a way that is not the caller's fault."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The engine cannot be reached (down, refused, network); retry later."""


class LeaseLostError(OmniQError):
    """The worker's lease on a task expired or was taken over; its outcome was not recorded."""


class SerializationError(OmniQError, ValueError):
    """A value cannot be serialized, or a stored payload cannot be decoded."""


class PayloadTooLargeError(SerializationError):
    """A serialized payload is larger than the configured ``max_payload_size``."""


class UnknownTaskError(OmniQError, LookupError):
    """No task function is registered under that name."""


class TaskNotFoundError(OmniQError, LookupError):
    """No task with that id exists."""


class TaskTimeoutError(OmniQError, TimeoutError):
    """A task ran longer than its timeout."""


class ResultTimeoutError(OmniQError, TimeoutError):
    """Waiting for a result took longer than the caller allowed."""
