"""Testing code that enqueues: an app on a private in-memory store, and ``drain`` to run what it queued.

Two ways to test code that enqueues tasks, without a server or a worker process:

* **Eager** (``OMNIQ_EAGER=1`` or ``Settings(eager=True)``): ``enqueue`` runs the task at once and
  stores its result (:mod:`omniq._eager`); nothing else changes in the code under test.
* **Queued, then drained**: point the app at the memory engine (``OMNIQ_BACKEND=memory``, or the
  ``omniq_app`` fixture of :mod:`omniq.testing.plugin`, which gives a connected app on a store of
  its own), let the code under test enqueue, then ``await drain(app)``: a burst worker in this
  process runs every ready task (and the retries it schedules) and returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio

from omniq.app import AsyncOmniQ
from omniq.models import new_id

__all__ = ["drain", "memory_app"]


@contextlib.asynccontextmanager
async def memory_app(**overrides: Any) -> AsyncIterator[AsyncOmniQ]:
    """A connected :class:`AsyncOmniQ` on a fresh in-memory store (settings ``overrides`` on top); closed on exit."""
    async with AsyncOmniQ(backend="memory", url=f"test-{new_id()}", **overrides) as app:
        yield app


async def drain(
    app: AsyncOmniQ, *, queues: Sequence[str] | None = None, concurrency: int = 10, timeout: float = 30.0
) -> None:
    """Run every ready task of ``app`` (of ``queues``) in this process, with the retries they schedule; then return.

    Raises:
        TimeoutError: the tasks were still running after ``timeout`` seconds.
    """
    with anyio.fail_after(timeout):
        await app.run_worker(concurrency, burst=True, queues=queues)
