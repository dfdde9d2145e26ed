"""The one seam every lifecycle event goes through.

The core never calls a lifecycle hook (:mod:`omniq.hookspecs`) by name: the
producer, the app and the worker each hold a :class:`Lifecycle`, built once
(at connect, at worker start), and call its attribute for the event::

    if (notify := lifecycle.task_started) is not None:
        notify(task, worker_id)

Each attribute is None when no plugin implements that hook, so an event
nobody observes costs one attribute read and a comparison. Otherwise it is a
function of the hook's arguments, passed by position in the order of the
hookspec (a positional call is about 1 µs cheaper per event than keywords),
that calls each implementation directly (in pluggy's order: the last
registered first, ``tryfirst``/``trylast`` respected) with the arguments
it asks for, and logs and swallows an implementation's exception, so one
broken observer neither fails a task nor keeps the others from seeing the
event. A plugin using pluggy's wrappers is called through pluggy instead
(same error handling).

Two hooks return values, collected into a list (None results left out):
``task_headers`` (dicts merged into ``task.headers``) and ``task_run``
(context managers wrapped around the task's run, see :func:`run_context`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy

    from omniq.models import Task

__all__ = ["EVENTS", "Lifecycle", "merge_headers", "run_context"]

logger = logging.getLogger("omniq.lifecycle")

#: every lifecycle event, named as its hook without the ``omniq_`` prefix.
EVENTS = (
    "task_headers",
    "task_enqueued",
    "task_cancelled",
    "task_started",
    "task_run",
    "task_succeeded",
    "task_failed",
    "task_retried",
    "task_released",
    "task_expired",
    "task_lease_lost",
    "worker_started",
    "worker_heartbeat",
    "worker_stopped",
)
#: the events whose hooks return something (collected into a list).
_COLLECTING = frozenset({"task_headers", "task_run"})

Notify = Callable[..., None]
Collect = Callable[..., list[Any]]


class Lifecycle:
    """The lifecycle hooks the registered plugins implement, decided once when built.

    Attributes (one per event in :data:`EVENTS`): None when no plugin
    implements the hook, else a function taking the hook's arguments by
    position, in the hookspec's order (``task_retried(task, error,
    worker_id, delay)``). ``task_headers`` and ``task_run`` return the list
    of non-None results; the others return None.
    """

    __slots__ = (*EVENTS, "names")

    task_headers: Collect | None
    task_enqueued: Notify | None
    task_cancelled: Notify | None
    task_started: Notify | None
    task_run: Collect | None
    task_succeeded: Notify | None
    task_failed: Notify | None
    task_retried: Notify | None
    task_released: Notify | None
    task_expired: Notify | None
    task_lease_lost: Notify | None
    worker_started: Notify | None
    worker_heartbeat: Notify | None
    worker_stopped: Notify | None
    #: the events some plugin implements.
    names: frozenset[str]

    def __init__(self, manager: pluggy.PluginManager | None = None) -> None:
        """Read which hooks the plugins of ``manager`` (default: OmniQ's) implement."""
        if manager is None:
            from omniq.plugins import get_plugin_manager

            manager = get_plugin_manager()
        names = []
        for event in EVENTS:
            hook = getattr(manager.hook, f"omniq_{event}")
            impls = hook.get_hookimpls()
            dispatch = _dispatcher(event, hook, impls) if impls else None
            setattr(self, event, dispatch)
            if dispatch is not None:
                names.append(event)
        self.names = frozenset(names)

    @classmethod
    def empty(cls) -> Lifecycle:
        """A dispatcher that calls nothing (before connect, or with plugins set aside)."""
        lifecycle = cls.__new__(cls)
        for event in EVENTS:
            setattr(lifecycle, event, None)
        lifecycle.names = frozenset()
        return lifecycle

    def __repr__(self) -> str:
        return f"Lifecycle({', '.join(sorted(self.names)) or 'no hooks'})"


def _dispatcher(event: str, hook: Any, impls: Sequence[Any]) -> Callable[..., Any]:
    collect = event in _COLLECTING
    if any(impl.hookwrapper or impl.wrapper for impl in impls):
        return _through_pluggy(event, hook, collect, tuple(hook.spec.argnames))
    # pluggy calls the last registered first; get_hookimpls() lists them the other way round.
    spec_args = tuple(hook.spec.argnames) if hook.spec is not None else ()
    calls = tuple((_taking_positions(impl, spec_args), impl.plugin_name) for impl in reversed(impls))
    if collect:

        def gather(*args: Any) -> list[Any]:
            results = []
            for function, plugin in calls:
                try:
                    value = function(*args)
                except Exception:
                    _log_failure(event, plugin)
                    continue
                if value is not None:
                    results.append(value)
            return results

        return gather

    if len(calls) == 1:  # the usual case: one observer (the built-in worker log, say)
        ((function, plugin),) = calls

        def notify_one(*args: Any) -> None:
            try:
                function(*args)
            except Exception:
                _log_failure(event, plugin)

        return notify_one

    def notify(*args: Any) -> None:
        for function, plugin in calls:
            try:
                function(*args)
            except Exception:  # noqa: PERF203 - each observer on its own: one failing must not silence the rest
                _log_failure(event, plugin)

    return notify


def _taking_positions(impl: Any, spec_args: tuple[str, ...]) -> Callable[..., Any]:
    """The implementation as a function of every argument of the hook, by position in the hookspec's order.

    An implementation that takes them all in that order (the usual case) is
    called as it is, on the hot path; one that takes fewer, or in another
    order, gets only those, by name (as pluggy does).
    """
    function: Callable[..., Any] = impl.function
    wanted = tuple(impl.argnames)
    if wanted == spec_args:
        return function
    positions = [spec_args.index(name) for name in wanted]

    def some(*args: Any) -> Any:
        return function(*[args[i] for i in positions])

    return some


def _through_pluggy(event: str, hook: Any, collect: bool, spec_args: tuple[str, ...]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        try:
            results = hook(**dict(zip(spec_args, args, strict=True)))
        except Exception:
            _log_failure(event, "a wrapper")
            return [] if collect else None
        return [r for r in results if r is not None] if collect else None

    return call


def _log_failure(event: str, plugin: str) -> None:
    logger.exception("the omniq plugin %s failed in omniq_%s; ignored", plugin, event)


def merge_headers(task: Task, lifecycle: Lifecycle) -> Task:
    """``task`` with the headers the ``omniq_task_headers`` hooks return merged in (the same task if none)."""
    gather = lifecycle.task_headers
    if gather is None:
        return task
    extra: dict[str, str] = {}
    for headers in gather(task):
        if isinstance(headers, dict):
            extra.update(headers)
        else:
            logger.error("an omniq_task_headers hook returned %r, not a dict; ignored", type(headers).__name__)
    if extra:
        task.headers = {**(task.headers or {}), **extra}
    return task


@contextlib.contextmanager
def run_context(managers: Sequence[contextlib.AbstractContextManager[None]]) -> Iterator[None]:
    """Enter ``managers`` in order (the first outermost) around the block; a failing one is logged and skipped.

    The task's own exception is not passed to them: the outcome hooks report
    it, and nothing here may change the task's outcome.
    """
    with contextlib.ExitStack() as stack:
        for manager in managers:
            try:
                stack.enter_context(_guarded(manager))
            except Exception:  # noqa: PERF203 - each plugin's context on its own
                _log_failure("task_run", type(manager).__name__)
        yield


@contextlib.contextmanager
def _guarded(manager: contextlib.AbstractContextManager[None]) -> Iterator[None]:
    manager.__enter__()
    try:
        yield
    finally:
        try:
            manager.__exit__(None, None, None)
        except Exception:
            _log_failure("task_run", type(manager).__name__)
