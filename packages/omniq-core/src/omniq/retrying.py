"""Retry control: which of a task's exceptions retry, and a task asking for a retry itself.

Per task, at registration (``@app.task(retry_on=..., no_retry_on=...)``): by
default every exception a task raises is retried while attempts are left
(``max_retries=N``: up to N + 1 runs, back-off between them). ``retry_on``
narrows that to the exception classes given (and their subclasses);
``no_retry_on`` names classes that never retry. An exception that does not
retry ends the task FAILED at once, whatever attempts are left.

Inside a task, ``raise omniq.Retry(delay=30)`` asks for another attempt after
30 seconds (``delay=None``: the usual back-off). It counts as an attempt like
any failure: when none is left, the task ends FAILED with a ``Retry`` error.
``retry_on`` and ``no_retry_on`` do not apply to it.

These live with the registered function, in the worker's process: exception
classes are not stored with a task, so the worker's registration decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from omniq._limits import seconds
from omniq.errors import ConfigurationError

__all__ = ["Retry", "RetryPolicy"]


class Retry(Exception):
    """Raise inside a task to run it again after ``delay`` seconds (None: the settings' back-off).

    Args:
        delay: seconds (or a timedelta) before the next attempt.
        reason: why, recorded as the attempt's error message.
    """

    def __init__(self, delay: float | timedelta | None = None, reason: str = "") -> None:
        self.delay = None if delay is None else seconds(delay, "Retry(delay)")
        self.reason = reason
        when = "after the back-off" if self.delay is None else f"in {self.delay:g} s"
        super().__init__(f"retry requested {when}" + (f": {reason}" if reason else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with its arguments (a process-pool task raises it in a child process)."""
        return (type(self), (self.delay, self.reason))


def _classes(value: Any, name: str) -> tuple[type[BaseException], ...]:
    items = (value,) if isinstance(value, type) else tuple(value) if isinstance(value, Iterable) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(f"{name} takes exception classes; got {item!r}")
    return items


class RetryPolicy:
    """Which exceptions of one task retry (see the module).

    Args:
        retry_on: an exception class or several; only these retry (None: every exception).
        no_retry_on: an exception class or several that never retry.
    """

    __slots__ = ("no_retry_on", "retry_on")

    def __init__(self, retry_on: Any = None, no_retry_on: Any = None) -> None:
        self.retry_on = None if retry_on is None else _classes(retry_on, "retry_on")
        self.no_retry_on = () if no_retry_on is None else _classes(no_retry_on, "no_retry_on")

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised by the task, may be retried (attempts permitting)."""
        if isinstance(exc, Retry):
            return True
        if self.no_retry_on and isinstance(exc, self.no_retry_on):
            return False
        return self.retry_on is None or isinstance(exc, self.retry_on)


#: the policy of a task registered without ``retry_on`` / ``no_retry_on``: every exception retries.
RETRY_EVERYTHING = RetryPolicy()
