"""The sync API's event loop: a thread running a blocking portal, and what a fork does to it.

A call of a coroutine function goes to the loop with ``asyncio.run_coroutine_threadsafe``:
one task and one hand-off each way. anyio's ``BlockingPortal.call`` first waits for the
loop to spawn a task in its task group (a hand-off and back), then for the task: measured
here (sync ``enqueue`` in a loop, 3 rounds of 3,000, while the test suite ran beside it),
SQLite 3,300-3,800 calls/s through the portal against 4,800-5,400 directly, Redis
2,300-4,100 against 3,350-3,500. The portal stays for the rest (sync callables, stopping).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TypeVar

import anyio
from anyio.from_thread import BlockingPortal

__all__ = ["Portal", "shutdown"]

_T = TypeVar("_T")


class Portal:
    """A blocking portal running in its own thread; closed at exit or when the OmniQ is collected.

    Fork-aware: a forked child (a pre-forking web server that built the app before forking, a
    process-pool task) does not inherit the parent's loop thread, so its first call starts a
    portal of its own; the app's components reconnect there (:func:`omniq.connection.fork_generation`).
    The thread is run here rather than by ``anyio.from_thread.start_blocking_portal``, whose
    context manager, collected in a child, would wait for ever on the parent's loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.closed = False
        self._start()

    def _start(self) -> None:
        started: Future[BlockingPortal] = Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                self._loop = asyncio.get_running_loop()
                started.set_result(portal)
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve)
            except BaseException as exc:  # reported to the starter, or lost after a stop
                if not started.done():
                    started.set_exception(exc)

        self._pid = os.getpid()
        self._thread = threading.Thread(target=run, name="omniq-portal", daemon=True)
        self._thread.start()
        self._portal = started.result()

    @property
    def owned(self) -> bool:
        """Whether this process started the running portal (False in a forked child before its first call)."""
        return self._pid == os.getpid()

    @property
    def portal(self) -> BlockingPortal:
        if not self.owned:
            self._lock = threading.Lock()  # the parent's may have been held at the fork
            self._start()
        return self._portal

    def run(self, coroutine_function: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``coroutine_function()`` on the loop and wait for its result (its exception is raised here)."""
        self.portal  # noqa: B018 - starts a portal of this process's own in a forked child
        coroutine = coroutine_function()
        assert asyncio.iscoroutine(coroutine)
        result: _T = asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
        return result

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        if self.owned:  # a parent's portal thread is not in this process: nothing to stop
            try:
                self._portal.call(self._portal.stop, False)
            except RuntimeError:  # already stopped
                pass
            self._thread.join()


def shutdown(portal: Portal, close: Callable[[], Awaitable[object]]) -> None:
    """Run ``close()`` on the portal's loop, then stop the portal (a sync façade's finalizer; never raises)."""
    if portal.closed:
        return
    if not portal.owned:  # a forked child that never called: the parent's connections are the parent's
        portal.close()
        return
    try:
        portal.portal.call(close)
    except Exception:  # closing at interpreter exit must not raise
        pass
    portal.close()
