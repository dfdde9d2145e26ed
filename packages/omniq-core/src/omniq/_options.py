"""The enqueue options, declared once.

``EnqueueOptions`` is the one declaration of the sixteen options a call can
carry: its fields' names, types and meaning. Everything else derives from
it: ``OPTION_NAMES`` (what ``@app.task(...)``, ``handle.options(...)`` and
``enqueue_many(..., **options)`` accept, checked by :meth:`from_kwargs`),
and the keyword parameters of ``AsyncOmniQ.enqueue`` and ``OmniQ.enqueue``.

Python cannot derive a signature from a class in a way mypy and IDEs see,
so two typed views are written out, and ``tests/core/test_options.py``
holds both to this declaration (the same names, in the same order, with the
same types, default None):

* the keyword parameters of ``enqueue`` (async and sync), written out
  because ``enqueue``'s ``**kwargs`` are the task's own arguments;
* ``TaskOptions``, the same fields as a TypedDict, which types every
  ``**options`` (``@app.task(...)``, ``handle.options(...)``,
  ``enqueue_many(...)``) through ``Unpack``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypedDict

from omniq.errors import ConfigurationError
from omniq.flow_control import make_limits

__all__ = ["OPTION_NAMES", "EnqueueOptions", "TaskOptions", "depends_tuple"]


@dataclasses.dataclass(frozen=True)
class EnqueueOptions:
    """Per-task options; None means "use the next default" (the decorator's, then the settings').

    Attributes:
        eta: run at that time (an aware datetime; a naive one is local time).
        delay: run after that many seconds (or a timedelta).
        interval: run repeatedly, every that many seconds (or a timedelta);
            the id enqueue returns is the schedule id.
        cron: run repeatedly, at the ticks of this cron expression; the id
            enqueue returns is the schedule id.
        max_retries: retries after the first attempt: ``max_retries=2`` runs
            the task at most 3 times.
        timeout: seconds one attempt may run.
        ttl: seconds the task may wait; if it has not started by then it is
            recorded EXPIRED and never runs.
        result_ttl: seconds the result is kept.
        queue: the queue it goes to (default ``"default"``).
        priority: higher runs first among ready tasks of a queue (default 0).
        unique_key: while a task with this key is pending or running, enqueue
            returns that task's id instead of adding another.
        depends_on: task ids that must succeed first (one id or several); if
            one fails, this task fails with a DependencyFailed error. Kept as
            a tuple.
        rate_limit: at most this many tasks of this name (or of ``limit_key``)
            start per unit of time, across every worker: ``"100/s"``, ``"30/m"``,
            ``"500/h"``. A token bucket held by the engine (see :mod:`omniq.flow_control`).
        rate_burst: how many may start at once after a quiet spell (the bucket's
            size; default: the per-second rate, at least 1).
        concurrency_limit: at most this many tasks of this name (or of
            ``limit_key``) run at once, across every worker.
        limit_key: count the limits per key instead of per task name: a string,
            or a callable of the task's arguments (``lambda customer, **_: customer``)
            evaluated at enqueue.
    """

    eta: datetime | None = None
    delay: float | timedelta | None = None
    interval: float | timedelta | None = None
    cron: str | None = None
    max_retries: int | None = None
    timeout: float | timedelta | None = None
    ttl: float | timedelta | None = None
    result_ttl: float | timedelta | None = None
    queue: str | None = None
    priority: int | None = None
    unique_key: str | None = None
    depends_on: str | Iterable[str] | None = None
    rate_limit: str | None = None
    rate_burst: int | None = None
    concurrency_limit: int | None = None
    limit_key: str | Callable[..., str] | None = None

    def __post_init__(self) -> None:
        if self.depends_on is not None and not isinstance(self.depends_on, tuple):
            # a tuple keeps the options hashable (the app caches what it resolved per option set)
            object.__setattr__(self, "depends_on", depends_tuple(self.depends_on))
        if self.rate_limit is not None or self.concurrency_limit is not None or self.rate_burst is not None:
            # bad limits fail where they are written: at the decorator, options() or the enqueue call
            make_limits(
                "", rate_limit=self.rate_limit, rate_burst=self.rate_burst, concurrency_limit=self.concurrency_limit
            )
        if self.limit_key is not None and not (callable(self.limit_key) or isinstance(self.limit_key, str)):
            raise ConfigurationError(f"limit_key={self.limit_key!r} is not valid: expected a string or a callable")

    def merged(self, other: EnqueueOptions) -> EnqueueOptions:
        """Options of ``self`` overridden by the ones ``other`` sets."""
        changes = {name: getattr(other, name) for name in OPTION_NAMES if getattr(other, name) is not None}
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def picked(cls, named: Mapping[str, Any]) -> EnqueueOptions:
        """The options among an ``enqueue`` method's named parameters (its ``locals()``, taken first thing)."""
        return cls(**{name: named[name] for name in OPTION_NAMES})

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> EnqueueOptions:
        """Build from a dict, rejecting unknown names with a clear error."""
        unknown = set(options) - set(OPTION_NAMES)
        if unknown:
            raise ConfigurationError(
                f"unknown task option(s) {', '.join(sorted(unknown))}: expected any of {', '.join(OPTION_NAMES)}"
            )
        return cls(**options)


class TaskOptions(TypedDict, total=False):
    """:class:`EnqueueOptions` as keyword arguments: the type of every ``**options`` (``Unpack[TaskOptions]``)."""

    eta: datetime | None
    delay: float | timedelta | None
    interval: float | timedelta | None
    cron: str | None
    max_retries: int | None
    timeout: float | timedelta | None
    ttl: float | timedelta | None
    result_ttl: float | timedelta | None
    queue: str | None
    priority: int | None
    unique_key: str | None
    depends_on: str | Iterable[str] | None
    rate_limit: str | None
    rate_burst: int | None
    concurrency_limit: int | None
    limit_key: str | Callable[..., str] | None


#: option names accepted by enqueue, the decorator, ``options()`` and ``enqueue_many``, in declaration order.
OPTION_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(EnqueueOptions))


def depends_tuple(depends_on: str | Iterable[str] | None) -> tuple[str, ...]:
    """``depends_on`` as a tuple of ids: one id, several, or none."""
    if depends_on is None:
        return ()
    return (depends_on,) if isinstance(depends_on, str) else tuple(depends_on)
