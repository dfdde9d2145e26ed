"""Bounds on durations, counts and sizes, checked when settings load and again at enqueue.

A value inside these bounds can be stored by every engine and added to "now"
without overflowing, so it can never make a worker claim and release the same
task forever (a result TTL past year 9999 once made recording every result
fail; a ``nan`` lease made every claim fail). Stored records are checked
against wider bounds when they are decoded (:data:`omniq.models.Seconds`).

Rejected values are shown through :func:`shown`, never raw: a URL put in the
wrong setting must not carry its password into an error message.
"""

from __future__ import annotations

import math
import numbers
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from omniq.errors import ConfigurationError

if TYPE_CHECKING:
    from omniq._options import EnqueueOptions

__all__ = [
    "MAX_DURATION",
    "MAX_PAYLOAD_SIZE",
    "MAX_RETRIES",
    "MAX_WORKERS",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "check_options",
    "integer",
    "seconds",
    "shown",
]

#: the longest duration a setting or an enqueue option may give: ten years, in seconds.
MAX_DURATION = 10 * 365.25 * 86400
#: the most tasks one worker pool runs at once.
MAX_WORKERS = 10_000
#: the most retries a task may have (ten years of retries at the default back-off cap).
MAX_RETRIES = 1_000_000
#: the largest ``max_payload_size``: 512 MiB, the most a Redis value holds.
MAX_PAYLOAD_SIZE = 512 * 1024 * 1024
#: the priority range: what PostgreSQL's ``integer`` column stores.
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1

_SHOWN_LENGTH = 60
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,19}")


def shown(value: Any) -> str:
    """``value`` as an error message may show it: numbers and short plain words as they are,
    a URL by its scheme only, anything else by its type or length (a password never shows)."""
    if value is None or isinstance(value, bool | float | timedelta | datetime):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**20 else f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, str):
        scheme, sep, _ = value.partition("://")
        if sep:  # the scheme only if it is one: text before a damaged URL may end in its password
            return f"<a URL: {scheme}://...>" if _SCHEME.fullmatch(scheme) else "<a URL>"
        if len(value) > _SHOWN_LENGTH or not value.isprintable() or any(c in value for c in ":@/\\"):
            return f"<{len(value)} characters>"
        return repr(value)
    return f"<a {type(value).__name__}>"


def seconds(value: Any, name: str, *, positive: bool = False) -> float:
    """Check a duration in seconds (a real number or a timedelta): finite, not negative
    (positive if asked), at most :data:`MAX_DURATION`."""
    if isinstance(value, timedelta):
        number = value.total_seconds()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
    else:
        raise ConfigurationError(f"{name}={shown(value)} is not valid: expected seconds or a timedelta")
    if not math.isfinite(number):
        raise ConfigurationError(f"{name}={shown(value)} is not valid: a duration must be a finite number")
    if number < 0 or (positive and number == 0) or number > MAX_DURATION:
        low = "a positive duration" if positive else "a duration of 0 or more"
        raise ConfigurationError(
            f"{name}={shown(value)} is not valid: expected {low}, at most ten years ({MAX_DURATION:.0f}s)"
        )
    return number


def integer(value: Any, name: str, low: int, high: int) -> int:
    """Check an int (not a bool) in ``[low, high]``."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigurationError(f"{name}={shown(value)} is not valid: expected an integer from {low} to {high}")
    return value


def _eta(value: Any, now: datetime) -> None:
    if not isinstance(value, datetime):
        raise ConfigurationError(f"eta={shown(value)} is not valid: expected a datetime")
    try:
        offset = (value.astimezone(timezone.utc) - now).total_seconds()
    except (OverflowError, ValueError):  # a naive datetime.min/max has no local time
        offset = math.inf
    if abs(offset) > MAX_DURATION:
        raise ConfigurationError(f"eta={value!r} is not valid: it must be within ten years of now")


def check_options(options: EnqueueOptions, now: datetime | None = None) -> None:
    """Refuse enqueue options out of bounds, before anything is stored.

    Raises:
        ConfigurationError: naming the option and its bounds.
    """
    for name in ("delay", "ttl", "result_ttl", "timeout", "interval"):
        value = getattr(options, name)
        if value is not None:
            seconds(value, name, positive=name == "interval")
    if options.max_retries is not None:
        integer(options.max_retries, "max_retries", 0, MAX_RETRIES)
    if options.priority is not None:
        integer(options.priority, "priority", PRIORITY_MIN, PRIORITY_MAX)
    if options.eta is not None:
        _eta(options.eta, now or datetime.now(timezone.utc))
