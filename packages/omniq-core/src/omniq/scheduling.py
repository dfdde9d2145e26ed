"""Time arithmetic for tasks: ETAs, recurring ticks and retry back-off."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import msgspec

from omniq.errors import ConfigurationError
from omniq.models import Task, TaskStatus, utcnow

__all__ = ["Schedule", "backoff_delay", "next_cron_tick", "next_run", "resolve_eta", "to_seconds", "validate_cron"]


class Schedule(msgspec.Struct, kw_only=True):
    """A recurring task seen as a schedule (its id is the task's id)."""

    id: str
    func: str
    queue: str
    interval: float | None
    cron: str | None
    paused: bool
    next_run_at: datetime | None
    status: TaskStatus

    @classmethod
    def from_task(cls, task: Task) -> Schedule:
        """Describe a recurring task as a schedule."""
        return cls(
            id=task.id,
            func=task.func,
            queue=task.queue,
            interval=task.interval,
            cron=task.cron,
            paused=task.paused,
            next_run_at=task.eta,
            status=task.status,
        )


def to_seconds(value: float | timedelta | None, name: str) -> float | None:
    """Accept seconds or a timedelta; reject negatives with a clear error."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ConfigurationError(f"{name}={value!r} is not valid: it cannot be negative")
    return seconds


def resolve_eta(eta: datetime | None, delay: float | timedelta | None, now: datetime | None = None) -> datetime | None:
    """Combine ``eta`` and ``delay`` into one aware UTC datetime (None = run now)."""
    if eta is not None and delay is not None:
        raise ConfigurationError("give either eta or delay, not both")
    if eta is not None:
        if eta.tzinfo is None:
            # Naive datetimes are taken as local time, as datetime.timestamp() does.
            eta = eta.astimezone()
        return eta.astimezone(timezone.utc)
    seconds = to_seconds(delay, "delay")
    if seconds:
        return (now or utcnow()) + timedelta(seconds=seconds)
    return None


def validate_cron(expression: str) -> str:
    """Return ``expression`` if croniter accepts it, else raise ConfigurationError."""
    from croniter import croniter

    if not croniter.is_valid(expression):
        raise ConfigurationError(f"cron={expression!r} is not a valid cron expression (e.g. '*/5 * * * *')")
    return expression


def next_cron_tick(expression: str, after: datetime) -> datetime:
    """The first tick of ``expression`` strictly after ``after`` (UTC)."""
    from croniter import croniter

    tick: datetime = croniter(expression, after.astimezone(timezone.utc)).get_next(datetime)
    return tick.astimezone(timezone.utc)


def next_run(*, interval: float | None, cron: str | None, after: datetime) -> datetime:
    """The next tick of a recurring task after ``after``.

    Interval ticks are anchored on the previous scheduled time, not on when the
    run finished, so a schedule does not drift; a run that overran skips the
    ticks it missed rather than firing them in a burst.
    """
    now = utcnow()
    if cron is not None:
        return next_cron_tick(cron, max(after, now))
    if interval is None or interval <= 0:
        raise ConfigurationError("a recurring task needs interval > 0 or a cron expression")
    tick = after + timedelta(seconds=interval)
    if tick <= now:
        missed = int((now - tick).total_seconds() // interval) + 1
        tick += timedelta(seconds=interval * missed)
    return tick


def backoff_delay(attempt: int, base: float, maximum: float, *, rng: random.Random | None = None) -> float:
    """Exponential back-off with full jitter for the retry after ``attempt`` (1-based).

    The delay is drawn uniformly from [base * 2**(attempt-1) / 2, base * 2**(attempt-1)],
    capped at ``maximum``: half fixed so retries do make progress, half jitter so a
    burst of failures does not retry in lock-step.
    """
    # A float power, its exponent capped: an int 2**1024 times a float raised OverflowError from the
    # 1025th attempt on (max_retries allows a million), and the worker could never record the retry.
    ceiling = min(maximum, base * 2.0 ** min(max(0, attempt - 1), 1023))
    return (rng or random).uniform(ceiling / 2, ceiling)
