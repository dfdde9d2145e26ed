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
    "OmniQError",
    "PayloadTooLargeError",
    "SerializationError",
    "TaskArgumentError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "UnknownTaskError",
    "redact_url",
]

#: where a URL's authority starts: ``://`` (urllib drops tabs and newlines first, so they may sit inside).
_AUTHORITY_START = re.compile(r":[\t\r\n]*/[\t\r\n]*/")
#: a URL with no scheme whose authority starts at once (urllib strips C0 controls and spaces in front).
_LEADING_AUTHORITY = re.compile(r"[\x00-\x20]*/[\t\r\n]*/")
_PASSWORD_IN_QUERY = re.compile(r"(?i)(?P<key>[?&](?:password|pass|pwd|secret|token)=)[^&\s]*")


def redact_url(text: str) -> str:
    """Replace every password in URLs inside ``text`` with ``***``.

    The password is what :func:`urllib.parse.urlsplit` calls one, and more
    when in doubt: after each ``://`` (and a leading ``//``), everything
    between the first ``:`` of ``user:`` and the *last* ``@`` before the next
    URL is redacted, so a password holding ``@``, ``/`` or spaces never
    survives. A ``password=``/``token=`` query parameter is redacted too.
    Linear in the length of ``text``.

    >>> redact_url("redis://user:s3cret@host:6379/0")
    'redis://user:***@host:6379/0'
    """
    starts = [match.end() for match in _AUTHORITY_START.finditer(text)]
    leading = _LEADING_AUTHORITY.match(text)
    if leading:
        starts.insert(0, leading.end())
    if starts:
        pieces: list[str] = []
        done = 0
        for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
            at = text.rfind("@", start, end)
            colon = text.find(":", start, at) if at >= 0 else -1
            if colon >= 0 and not any(c in text[start:colon] for c in "/?#"):
                pieces += [text[done : colon + 1], "***"]
                done = at
        text = "".join([*pieces, text[done:]])
    return _PASSWORD_IN_QUERY.sub(r"\g<key>***", text)


class OmniQError(Exception):
    """Base class of every error OmniQ raises."""


class ConfigurationError(OmniQError, ValueError):
    """A setting is malformed; the message names the setting and what it accepts."""


class BackendNotFoundError(ConfigurationError):
    """No backend of that name is installed; the message lists the installed ones."""


class NotSupportedError(ConfigurationError):
    """The configured backend cannot do what was asked (it lacks the capability); nothing was stored.

    The message names the backend and the capability, for example a rate limit
    on a task queue without :attr:`~omniq.capabilities.Capability.FLOW_CONTROL`.
    """


class BackendError(OmniQError):
    """An engine failed in a way that is not the caller's fault."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The engine cannot be reached (down, refused, network); retry later."""


class LeaseLostError(OmniQError):
    """Deprecated, never raised: a lost lease is the worker's business, not the caller's.

    A worker whose lease expired or was taken over drops the attempt's outcome
    (the queue's ``finish`` reports it as not accepted) and logs it; nothing
    reaches user code. Kept importable (``omniq.LeaseLostError`` warns) so that
    code written against the seed project still runs; no longer exported.
    """


class SerializationError(OmniQError, ValueError):
    """A value cannot be serialized, or a stored payload cannot be decoded."""


class PayloadTooLargeError(SerializationError):
    """A serialized payload is larger than the configured ``max_payload_size``."""


class TaskArgumentError(OmniQError, TypeError):
    """A task's arguments do not fit its function: its signature, or a parameter's annotation.

    Raised at enqueue (nothing is stored); on a worker, the task fails with
    this error type and is not retried. The message names the task and the argument.
    """


class UnknownTaskError(OmniQError, LookupError):
    """No task function is registered under that name."""


class TaskNotFoundError(OmniQError, LookupError):
    """No task with that id exists.

    Raised by ``get_result(task_id, wait=True)`` when there is neither a
    result nor a task with that id, since nothing could end the wait.
    """


class TaskTimeoutError(OmniQError, TimeoutError):
    """A task ran longer than its timeout."""


class ResultTimeoutError(OmniQError, TimeoutError):
    """Deprecated, never raised: ``get_result(wait=True, timeout=...)`` returns None when the time runs out.

    That is the documented behaviour (README, ``AsyncOmniQ.get_result``), so
    it stays. Kept importable (``omniq.ResultTimeoutError`` warns) so that
    code written against the seed project still runs; no longer exported.
    """
