"""Building tasks: a call and its options become a validated Task record.

The options are validated and resolved against the settings once per
option set (an app uses a handful), so building one task only serializes its
arguments and fills in the time-dependent fields.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from omniq._limits import check_options
from omniq._options import EnqueueOptions, depends_tuple
from omniq.constants import DEFAULT_QUEUE
from omniq.errors import ConfigurationError
from omniq.flow_control import Limits, make_limits
from omniq.models import Task, new_id, utcnow
from omniq.scheduling import next_cron_tick, resolve_eta, to_seconds, validate_cron

if TYPE_CHECKING:
    from omniq.config import Settings
    from omniq.serialization import SerializerRegistry

__all__ = ["TaskBuilder"]

#: option sets whose time-independent part a producer keeps resolved.
_RESOLVED_CACHE = 256


class _Resolved(NamedTuple):
    """The part of a task's options that does not depend on when it is enqueued, resolved."""

    interval: float | None
    cron: str | None
    ttl: float | None
    max_retries: int
    timeout: float | None
    result_ttl: float | None
    queue: str
    priority: int
    unique_key: str | None
    depends_on: tuple[str, ...]
    limits: Limits | None


class TaskBuilder:
    """Builds Task records from calls, with each option set resolved once (see the module)."""

    def __init__(self, settings: Settings, serializer: SerializerRegistry) -> None:
        self.settings = settings
        self.serializer = serializer
        # options -> their time-independent part, resolved (see builder)
        self._resolved: dict[EnqueueOptions, _Resolved] = {}

    def build(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions) -> Task:
        """The Task record of one call (validated; not enqueued)."""
        return self.builder(name, options)(self.serializer.dumps((args, kwargs)))

    def builder(self, name: str, options: EnqueueOptions) -> Callable[..., Task]:
        """Validate and resolve ``options`` once; the returned function makes a task per payload."""
        now = utcnow()
        try:
            fixed = self._resolved.get(options)
        except TypeError:  # an option value that cannot be hashed: resolve it every time
            fixed = self._resolve(options)
        else:
            if fixed is None:
                fixed = self._resolve(options)
                if len(self._resolved) < _RESOLVED_CACHE:  # a bound: apps use a handful of option sets
                    self._resolved[options] = fixed
        eta = resolve_eta(options.eta, options.delay, now)
        if fixed.cron is not None and eta is None:
            eta = next_cron_tick(fixed.cron, now)
        expires_at = (eta or now) + timedelta(seconds=fixed.ttl) if fixed.ttl is not None else None
        limits = None if fixed.limits is None else msgspec.structs.replace(fixed.limits, key=name)

        def build(payload: bytes, task_id: str | None = None) -> Task:
            return Task(
                id=task_id or new_id(),
                func=name,
                payload=payload,
                queue=fixed.queue,
                priority=fixed.priority,
                unique_key=fixed.unique_key,
                eta=eta,
                interval=fixed.interval,
                cron=fixed.cron,
                max_retries=fixed.max_retries,
                timeout=fixed.timeout,
                expires_at=expires_at,
                result_ttl=fixed.result_ttl,
                depends_on=fixed.depends_on,
                created_at=now,
                limits=limits,
            )

        return build

    def _resolve(self, opts: EnqueueOptions) -> _Resolved:
        """The options' part that does not depend on the time, validated and with defaults filled in."""
        check_options(opts)  # bounds first: nothing out of range reaches a Task (or an OverflowError)
        settings = self.settings
        interval = to_seconds(opts.interval, "interval")
        if interval is not None and interval <= 0:
            raise ConfigurationError(f"interval={opts.interval!r} is not valid: it must be positive")
        cron = validate_cron(opts.cron) if opts.cron is not None else None
        if interval is not None and cron is not None:
            raise ConfigurationError("give either interval or cron, not both")
        max_retries = opts.max_retries if opts.max_retries is not None else settings.default_max_retries
        if max_retries < 0:
            raise ConfigurationError(f"max_retries={max_retries} is not valid: expected an integer >= 0")
        limits = make_limits(  # keyed by the task's name in builder(): the options are cached across names
            "",
            rate_limit=opts.rate_limit,
            rate_burst=opts.rate_burst,
            concurrency_limit=opts.concurrency_limit,
        )
        if opts.limit_key is not None and limits is None:
            raise ConfigurationError("limit_key is given without rate_limit or concurrency_limit")
        return _Resolved(
            interval=interval,
            cron=cron,
            ttl=to_seconds(opts.ttl, "ttl") if opts.ttl is not None else settings.task_ttl,
            max_retries=max_retries,
            timeout=to_seconds(opts.timeout, "timeout") if opts.timeout is not None else settings.default_timeout,
            result_ttl=(
                to_seconds(opts.result_ttl, "result_ttl") if opts.result_ttl is not None else settings.result_ttl
            ),
            queue=opts.queue or DEFAULT_QUEUE,
            priority=opts.priority or 0,
            unique_key=opts.unique_key,
            depends_on=depends_tuple(opts.depends_on),
            limits=limits,
        )
