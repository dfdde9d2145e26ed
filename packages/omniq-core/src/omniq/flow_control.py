"""Flow control: rate and concurrency limits held by the engine at claim time, and queue pause.

A task's limits travel with it as :class:`Limits` (``Task.limits``), built once
per option set by :func:`make_limits`. The engine applies them when a claim
meets the task, so a limited task is never claimed only to be released, and
the limits hold across every worker process and host on the engine. A task
without limits (``Task.limits`` None) takes the claim path it always took.

The rules, which every engine with :attr:`Capability.FLOW_CONTROL` follows in its
claim step (envelope engines call :func:`admit`; script and SQL engines say
the same in their own language):

* **Holders.** A key's holders are its RUNNING tasks with a concurrency limit
  whose lease has not expired (engine clock). A killed worker's task stops
  holding its slot when its lease runs out, recovered or not: no slot leaks.
* **Concurrency.** A candidate whose key has ``concurrency`` holders or more is
  *held*: it stays PENDING with ``held`` True and ``eta`` at the earliest
  deadline among the holders' leases (the latest a slot can stay taken), and
  is not claimed. When a holder leaves RUNNING (finish, cancel, recover), the
  engine wakes one held task of the key in the same step (the first in claim
  order: ``held`` False, ``eta`` None, so it is ready at its old place).
* **Rate** (GCRA, a token bucket of ``burst`` tokens refilled at ``rate`` per
  second): per key the engine keeps one number, the theoretical arrival time
  ``tat`` (engine clock, seconds). A candidate may start at ``now`` when
  ``now >= tat - (burst - 1) / rate``; taking it sets
  ``tat = max(tat, now) + 1 / rate``. A candidate that may not start yet
  *reserves* the next slot: ``eta`` = the time it may start, ``rate_reserved``
  True, ``tat`` advanced as if it started, so each waiting task is parked once
  and the worker's wait covers its due time (no polling). A reserved candidate
  is claimed at its ``eta`` without a second check. Over any window of ``w``
  seconds no more than ``rate * w + burst`` tasks of a key start.
* **A claim's share.** An engine may admit at most :func:`claim_share` of a
  key's ``concurrency`` in one claim (half of a limit of 4 or more, rounded
  up), leaving the rest ready at its place for the next claim, often another
  worker's. Slots taken by one claim go round one batch at a time; shared,
  one worker's claim and finish overlap another's run. Claims in a row still
  fill the limit exactly, in claim order.
* A task with both checks passes concurrency first; a reserved task held for
  concurrency gives up its reservation (the slot is wasted, never exceeded).
* A claimed task has ``held`` and ``rate_reserved`` cleared (and an operator
  retry clears them), so whenever it goes back to PENDING (retry, release,
  recover, a recurring run) it meets its limits afresh.

Queue pause (:attr:`Capability.QUEUE_PAUSE`): ``set_queue_paused`` keeps a set
of paused queue names in the engine; claims and ``wait_for_work`` skip them,
and nothing already running is touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from omniq.errors import ConfigurationError

if TYPE_CHECKING:
    from omniq.models import Task

__all__ = [
    "KEY_SEPARATOR",
    "MAX_CONCURRENCY",
    "MAX_RATE",
    "Admission",
    "Limits",
    "admit",
    "admit_limits",
    "claim_share",
    "limit_key_of",
    "make_limits",
    "parse_rate",
]

#: the most tasks of one key that may run at once.
MAX_CONCURRENCY = 1_000_000
#: the highest rate a limit may give, per second.
MAX_RATE = 1_000_000.0
#: between a task name and its ``limit_key`` in :attr:`Limits.key`.
KEY_SEPARATOR = "|"

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_PER.update({"h": 3600.0, "hour": 3600.0})


class Limits(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A task's limits, as stored with it and read by the engine's claim.

    Attributes:
        key: what the limits count: the task name, or ``name|limit_key`` for a per-key limit.
        concurrency: at most this many tasks of ``key`` run at once (None: no concurrency limit).
        rate: at most this many tasks of ``key`` start per second, on average (None: no rate limit).
        burst: the token bucket's size: how many may start at once after a quiet spell (with ``rate``).
    """

    key: str
    concurrency: int | None = None
    rate: float | None = None
    burst: int | None = None

    @property
    def interval(self) -> float:
        """Seconds between two starts at the steady rate."""
        assert self.rate is not None
        return 1.0 / self.rate

    @property
    def tolerance(self) -> float:
        """How far ahead of ``tat`` a start may come: the burst, in seconds."""
        assert self.rate is not None and self.burst is not None
        return (self.burst - 1) / self.rate


def parse_rate(spec: Any) -> float:
    """``"100/s"``, ``"30/m"`` or ``"500/h"`` as tasks per second.

    Raises:
        ConfigurationError: for anything else, or a rate that is not positive.
    """
    match = _RATE.fullmatch(spec) if isinstance(spec, str) else None
    if match is None:
        raise ConfigurationError(
            f"rate_limit={spec!r} is not valid: expected a count per unit, such as '100/s', '30/m' or '500/h'"
            if isinstance(spec, str) and len(spec) <= 40
            else "rate_limit is not valid: expected a string such as '100/s', '30/m' or '500/h'"
        )
    count = float(match.group(1))
    rate = count / _PER[match.group(2)]
    if not count > 0 or rate > MAX_RATE:
        raise ConfigurationError(
            f"rate_limit={spec!r} is not valid: expected a positive rate, at most {MAX_RATE:.0f}/s"
        )
    return rate


def _positive_int(value: Any, name: str, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
        raise ConfigurationError(f"{name}={value!r} is not valid: expected an integer from 1 to {high}")
    return value


def make_limits(
    name: str, *, rate_limit: Any = None, rate_burst: Any = None, concurrency_limit: Any = None
) -> Limits | None:
    """Check a task's limit options and build its :class:`Limits` (key: the task name); None without limits.

    Raises:
        ConfigurationError: a bad rate, burst or concurrency, or a burst without a rate.
    """
    if rate_limit is None and concurrency_limit is None:
        if rate_burst is not None:
            raise ConfigurationError("rate_burst is given without rate_limit")
        return None
    concurrency = (
        None if concurrency_limit is None else _positive_int(concurrency_limit, "concurrency_limit", MAX_CONCURRENCY)
    )
    rate = burst = None
    if rate_limit is not None:
        rate = parse_rate(rate_limit)
        burst = max(1, int(rate)) if rate_burst is None else _positive_int(rate_burst, "rate_burst", MAX_CONCURRENCY)
    elif rate_burst is not None:
        raise ConfigurationError("rate_burst is given without rate_limit")
    return Limits(key=name, concurrency=concurrency, rate=rate, burst=burst)


def limit_key_of(
    limit_key: str | Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """The per-key part of a limit for one call: ``limit_key`` itself, or its value for the call's arguments.

    The callable is called as the task is, ``limit_key(*args, **kwargs)``, so it takes the
    task's parameters (``lambda customer, report: customer``).

    Raises:
        ConfigurationError: the key (or what the callable returned) is not a non-empty string,
            or the callable does not accept the call's arguments (nothing is enqueued).
    """
    if limit_key is None:
        return None
    if callable(limit_key):
        try:
            value = limit_key(*args, **kwargs)
        except TypeError as exc:
            raise ConfigurationError(
                f"limit_key could not be called with the task's arguments ({exc}): it is called as the "
                f"task is, with {len(args)} positional and {sorted(kwargs)} keyword arguments; nothing was enqueued"
            ) from exc
    else:
        value = limit_key
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"limit_key gave {type(value).__name__} {value!r}: expected a non-empty string"
            if not isinstance(value, str)
            else "limit_key gave an empty string: expected a non-empty string"
        )
    return value


class Admission(NamedTuple):
    """What a claim does with a limited candidate (see :func:`admit`).

    Attributes:
        claim: take it now.
        eta: when not claimed, the engine-clock time (seconds) it waits until.
        held: when not claimed, whether it waits for a concurrency slot (else for its rate slot).
        tat: the key's new theoretical arrival time (None: unchanged).
    """

    claim: bool
    eta: float | None
    held: bool
    tat: float | None


def admit(task: Task, now: float, holders: int, earliest_deadline: float | None, tat: float | None) -> Admission:
    """Apply the module's rules to one limited candidate, for engines that keep whole envelopes.

    Args:
        task: the candidate (``task.limits`` set).
        now: engine now, seconds since the epoch.
        holders: the key's holders now (RUNNING, concurrency-limited, lease unexpired).
        earliest_deadline: the earliest lease deadline among them (seconds), or None.
        tat: the key's stored theoretical arrival time, or None if it has none.
    """
    assert task.limits is not None
    return admit_limits(task.limits, task.rate_reserved, now, holders, earliest_deadline, tat)


def claim_share(concurrency: int) -> int:
    """The most holders of one key a single claim admits: half of a limit of 4 or more (rounded up), else all."""
    return -(-concurrency // 2) if concurrency >= 4 else concurrency


def admit_limits(
    limits: Limits, rate_reserved: bool, now: float, holders: int, earliest_deadline: float | None, tat: float | None
) -> Admission:
    """:func:`admit` from the two fields it reads (an engine that keeps them as columns decodes no more)."""
    if limits.concurrency is not None and holders >= limits.concurrency:
        return Admission(False, earliest_deadline if earliest_deadline is not None else now, True, None)
    if limits.rate is None or rate_reserved:
        return Admission(True, None, False, None)
    start = max(tat if tat is not None else now, now)
    allowed_at = start - limits.tolerance
    if now >= allowed_at - 1e-6:  # a microsecond of slack for float rounding of engine times
        return Admission(True, None, False, start + limits.interval)
    return Admission(False, allowed_at, False, start + limits.interval)
