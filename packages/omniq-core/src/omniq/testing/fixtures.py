"""Factories and small helpers shared by the conformance suites.

Backend authors may use them in their own engine-specific tests too.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from omniq.models import EventType, Task, TaskEvent, TaskResult, TaskStatus, new_id, utcnow

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from omniq.base import Component

__all__ = [
    "GARBAGE_PAYLOAD",
    "connected",
    "make_event",
    "make_result",
    "make_task",
    "now_ms",
    "wait_until",
]

C = TypeVar("C", bound="Component")
T = TypeVar("T")

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
