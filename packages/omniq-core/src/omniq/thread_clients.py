"""A client per calling thread, on an event loop of that thread's own: the blocking transport of asyncio-only drivers.

:attr:`~omniq.capabilities.Capability.BLOCKING_ENQUEUE` asks a task queue
to enqueue from a thread with no event loop, without handing the call to the
app's loop thread (two thread switches per call, a third to two thirds of a
sync enqueue). An engine with a blocking driver uses it directly; an engine
whose driver is asyncio's alone (asyncpg, nats-py) gives each calling thread
an event loop of its own and a client opened on it, and runs the same
coroutine there: the same statements, with no thread hand-off::

    self._blocking = ThreadClients(open=partial(asyncpg.connect, url), close=close_connection)

    def enqueue_blocking(self, tasks):
        with self._connection.errors():
            return self._blocking.run(lambda conn: self._inserts.insert(conn, tasks))

    async def close(self):
        await self._blocking.aclose()

A thread's loop runs only during its calls: a client that must answer its
server between calls (a NATS PING) is replaced after ``max_idle`` seconds
unused instead of being trusted. A call that fails drops its thread's client
(the next call opens another: the failure may have broken it). A forked
child opens its own. The owner closes them all with its own close; callers
check that the owner is connected before a call (a call after the close
would open a client nobody closes). Measured with ``benchmarks/request_path.py``: PostgreSQL
sync enqueue 1,850-1,890 calls/s through the loop thread, 2,940-3,230 this
way (same process, interleaved, the machine busy with the test suite).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

from omniq.errors import BackendError

__all__ = ["ThreadClients"]

C = TypeVar("C")
T = TypeVar("T")


class _Lane(Generic[C]):
    """One thread's loop and client; ``lock`` is held by a call, and by a close from another thread."""

    __slots__ = ("client", "last_used", "lock", "loop", "pid")

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.client: C | None = None
        self.last_used = 0.0
        self.lock = threading.Lock()
        self.pid = os.getpid()


class ThreadClients(Generic[C]):
    """Clients opened per calling thread, each on that thread's own event loop, for blocking calls.

    Args:
        open: opens a client (run on the calling thread's loop).
        close: closes one (run on its loop; errors are ignored).
        max_idle: seconds a client may stay unused before it is replaced
            (None: kept until it fails or the owner closes).
    """

    def __init__(
        self,
        open: Callable[[], Awaitable[C]],
        close: Callable[[C], Awaitable[None]],
        *,
        max_idle: float | None = None,
    ) -> None:
        self._open = open
        self._close = close
        self._max_idle = max_idle
        self._local = threading.local()
        self._lanes: list[_Lane[C]] = []
        self._lanes_lock = threading.Lock()
        self._pid = os.getpid()

    def run(self, call: Callable[[C], Awaitable[T]]) -> T:
        """``await call(client)`` with this thread's client, on this thread's loop; its result.

        Not from a thread whose event loop is running (the caller checks: a
        sync API called from a coroutine goes through its own loop thread).
        """
        lane: _Lane[C] | None = getattr(self._local, "lane", None)
        if lane is None or lane.pid != os.getpid() or lane.loop.is_closed():
            lane = self._new_lane()
        with lane.lock:
            if lane.loop.is_closed():
                raise BackendError("the component was closed while this call waited")
            loop = lane.loop
            now = time.monotonic()
            if lane.client is not None and self._max_idle is not None and now - lane.last_used > self._max_idle:
                self._drop(lane)
            try:
                if lane.client is None:
                    lane.client = loop.run_until_complete(self._open())
                result = loop.run_until_complete(call(lane.client))
            except BaseException:
                self._drop(lane)
                raise
            lane.last_used = time.monotonic()
            return result

    def _new_lane(self) -> _Lane[C]:
        lane: _Lane[C] = _Lane()
        self._local.lane = lane
        with self._lanes_lock:
            if lane.pid != self._pid:  # a forked child: the parent's lanes are not ours to close
                self._lanes, self._pid = [], lane.pid
            self._lanes.append(lane)
        return lane

    def _drop(self, lane: _Lane[C]) -> None:
        """Close the lane's client, if any (its lock held, its loop not running)."""
        client, lane.client = lane.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                lane.loop.run_until_complete(self._close(client))

    def close(self) -> None:
        """Close every thread's client and loop, from a thread with no running loop (a later call opens anew)."""
        with self._lanes_lock:
            lanes, self._lanes = (self._lanes, []) if self._pid == os.getpid() else ([], [])
        for lane in lanes:
            with lane.lock:  # waits for a call in flight
                self._drop(lane)
                lane.loop.close()

    async def aclose(self) -> None:
        """:meth:`close`, from a coroutine (the loops are run from a worker thread)."""
        if self._lanes:
            await anyio.to_thread.run_sync(self.close)
