"""Factories and small helpers shared by the conformance suites.

Backend authors may use them in their own engine-specific tests too.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import inspect
import multiprocessing
import os
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import pytest

from omniq.base import Component
from omniq.models import EventType, Task, TaskEvent, TaskResult, TaskStatus, new_id, utcnow
from omniq.monitoring import WorkerInfo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = [
    "CLOCK_SKEW",
    "GARBAGE_PAYLOAD",
    "ForkedChild",
    "connected",
    "make_event",
    "make_result",
    "make_task",
    "make_worker",
    "now_ms",
    "requires",
    "wait_until",
]

C = TypeVar("C", bound="Component")
F = TypeVar("F", bound="Callable[..., Any]")
T = TypeVar("T")

#: The clock skew the suites tolerate between the test process and the engine, in seconds (either way).
#:
#: A task's ``eta`` and a result's ``expires_at`` are instants written by the client (its clock)
#: and judged by the engine (its clock); lease deadlines are the engine's alone. Every check of
#: the suites that compares the two clocks leaves this much slack, and no more: an engine whose
#: clock is further off than this from its clients' runs delayed tasks early or late by as much.
CLOCK_SKEW = 1.0

#: opaque payload bytes: a format tag, NUL, invalid UTF-8 and every byte value once.
GARBAGE_PAYLOAD = b"\x01msgpack\x00\xff\xfe\xc3\x28\x80" + bytes(range(256))


def now_ms(offset: float = 0.0) -> datetime:
    """Return UTC now plus ``offset`` seconds, truncated to whole milliseconds.

    Engines that keep timestamps as floats or text round-trip millisecond
    values exactly, so tests can compare datetimes with ``==``.
    """
    moment = utcnow() + timedelta(seconds=offset)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def make_task(func: str = "omniq.testing.noop", **fields: Any) -> Task:
    """Build a PENDING task with a fresh id and a millisecond ``created_at``.

    Any :class:`~omniq.models.Task` field can be overridden:
    ``make_task(queue="mail", priority=5, max_retries=3)``.
    """
    fields.setdefault("id", new_id())
    fields.setdefault("payload", b"\x01" + fields["id"].encode())
    fields.setdefault("created_at", now_ms())
    return Task(func=func, **fields)


def make_result(task_id: str | None = None, **fields: Any) -> TaskResult:
    """Build a SUCCEEDED result for ``task_id`` (a fresh id when None)."""
    fields.setdefault("status", TaskStatus.SUCCEEDED)
    fields.setdefault("payload", b"\x01result")
    fields.setdefault("finished_at", now_ms())
    return TaskResult(task_id=task_id or new_id(), **fields)


def make_event(task_id: str | None = None, type: EventType = EventType.ENQUEUED, **fields: Any) -> TaskEvent:
    """Build an event for ``task_id`` (a fresh id when None) at a millisecond timestamp."""
    fields.setdefault("timestamp", now_ms())
    return TaskEvent(task_id=task_id or new_id(), type=type, **fields)


def make_worker(started: float = 0.0, **fields: Any) -> WorkerInfo:
    """Build a worker with a fresh id, started ``started`` seconds from now (millisecond times).

    Any :class:`~omniq.monitoring.WorkerInfo` field can be overridden:
    ``make_worker(-60, hostname="host-2", queues=("mail",))``.
    """
    values: dict[str, Any] = {
        "id": new_id(),
        "hostname": "host-1",
        "pid": os.getpid(),
        "queues": ("default", "mail"),
        "pool": "async",
        "concurrency": 8,
        "version": "1.2.3",
        "started_at": now_ms(started),
        "heartbeat_at": now_ms(),
        "in_flight": 2,
        "processed": 40,
        "failed": 3,
    }
    return WorkerInfo(**{**values, **fields})


def requires(*capabilities: str) -> Callable[[F], F]:
    """Skip a suite test (or fixture) unless the component under test declares every capability.

    The component under test is the first argument of the test that is a
    component (``task_queue``, ``result_storage``, ``event_storage``); the skip
    reason names its class and the capability it lacks. This is the one way the
    suites skip on a capability (see :class:`~omniq.base.Capability`)::

        @requires(Capability.FORK_SAFE)
        async def test_a_forked_child_enqueues(self, task_queue: BaseTaskQueue) -> None: ...

    Put it under ``@pytest.fixture`` to skip every test that uses the fixture.
    """

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        component = next((a for a in (*args, *kwargs.values()) if isinstance(a, Component)), None)
        if component is None:
            raise TypeError(f"@requires{capabilities}: the test takes no component to read the capabilities of")
        for capability in capabilities:
            if capability not in type(component).capabilities:
                # Reported at the test, not here (what pytest itself does for a skip raised in a fixture).
                reason = f"{type(component).__name__} lacks the {capability} capability"
                raise pytest.skip.Exception(reason, _use_item_location=True)

    def decorate(fn: F) -> F:
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def generator(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                check(args, kwargs)
                async with contextlib.aclosing(fn(*args, **kwargs)) as values:
                    async for value in values:
                        yield value

            return cast("F", generator)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def coroutine(*args: Any, **kwargs: Any) -> Any:
                check(args, kwargs)
                return await fn(*args, **kwargs)

            return cast("F", coroutine)
        raise TypeError(f"@requires decorates async tests and fixtures, not {fn!r}")

    return decorate


@contextlib.asynccontextmanager
async def connected(factory: Callable[[], C], count: int = 1) -> AsyncIterator[list[C]]:
    """Build ``count`` components from ``factory``, connect them, and close them on exit.

    Usage::

        async with connected(task_queue_factory, 4) as queues:
            ...
    """
    async with contextlib.AsyncExitStack() as stack:
        components: list[C] = []
        for _ in range(count):
            component = factory()
            await component.connect()
            stack.push_async_callback(component.close)
            components.append(component)
        yield components


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Call ``probe`` until it returns something truthy; fail the test after ``timeout`` s.

    Returns:
        the first truthy value.
    """
    with anyio.move_on_after(timeout):
        while True:
            value = await probe()
            if value:
                return value
            await anyio.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout} s")


class ForkedChild:
    """A forked child process running ``target(*args)``, whose return value comes back to the parent.

    The child is a daemon, is killed if its outcome is not in within the
    timeout, and prints its stacks and exits if it is stuck for
    ``stuck_after`` seconds (a lock inherited held, which no cancel reaches):
    a hang fails one test instead of keeping the test session from ending.
    The fork happens in the constructor, at a moment the caller chooses.
    """

    def __init__(self, target: Callable[..., Any], *args: Any, stuck_after: float = 40.0) -> None:
        context = multiprocessing.get_context("fork")
        self._result = context.Queue()
        self._process = context.Process(target=_run_forked, args=(self._result, stuck_after, target, args), daemon=True)
        self._process.start()

    async def outcome(self, timeout: float = 60.0) -> tuple[Any, int | None]:
        """``(what target returned, or the repr of what it raised; the child's exit code)``."""
        try:
            value = await anyio.to_thread.run_sync(self._result.get, True, timeout)
            await anyio.to_thread.run_sync(self._process.join, timeout)
        finally:
            if self._process.is_alive():
                self._process.kill()
        return value, self._process.exitcode


def _run_forked(result: Any, stuck_after: float, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    faulthandler.dump_traceback_later(stuck_after, exit=True)
    try:
        value = target(*args)
    except BaseException as exc:  # reported to the parent, which asserts on it
        value = repr(exc)
    result.put(value)
