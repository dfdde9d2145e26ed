"""The worker's side of the worker registry: register at start, refresh at every heartbeat, unregister at stop.

Each pool keeps one :class:`omniq.monitoring.WorkerInfo` entry in its task
queue's engine (``register_worker``), so ``app.list_workers()`` in any process
lists it. The entry is refreshed every ``heartbeat_interval`` seconds with
``ttl = REGISTRY_TTL_HEARTBEATS x heartbeat_interval`` (30 s with the default
10 s heartbeat). A killed worker's entry expires one TTL after its last
refresh, so it is gone between ``ttl - heartbeat_interval`` and ``ttl`` after
the worker died (20-30 s by default), well within the promised 2 x TTL
(60 s); an engine that cleans expired entries lazily still hides them from
``list_workers`` at once. After each refresh the ``omniq_worker_heartbeat``
hook receives the entry.

The refresh runs in its own loop, apart from the lease heartbeat, so a slow
registry never delays a lease extension. A registry that fails (the engine is
away) is logged, once per outage, and never stops the worker.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import anyio
import msgspec

from omniq.models import utcnow
from omniq.monitoring import WorkerInfo

if TYPE_CHECKING:
    from omniq.base import BaseTaskQueue
    from omniq.lifecycle import Lifecycle

__all__ = ["REGISTRY_TTL_HEARTBEATS", "Registration"]

logger = logging.getLogger("omniq.worker")

#: an entry lives this many heartbeat intervals after its last refresh.
REGISTRY_TTL_HEARTBEATS = 3
#: longest wait for one registry call at stop (the engine may be away).
_STOP_TIMEOUT = 5.0

#: (in flight, processed, failed) of the pool now.
Counts = Callable[[], tuple[int, int, int]]


def _version() -> str:
    try:
        return version("omniq-core")
    except PackageNotFoundError:  # pragma: no cover - a source tree without install
        return "0.0.0"


class Registration:
    """One pool's entry in the registry, and the loop that keeps it alive."""

    def __init__(
        self,
        queue: BaseTaskQueue,
        lifecycle: Lifecycle,
        counts: Counts,
        *,
        worker_id: str,
        queues: Sequence[str],
        pool: str,
        concurrency: int,
        heartbeat_interval: float,
    ) -> None:
        self.queue = queue
        self.lifecycle = lifecycle
        self.counts = counts
        self.interval = heartbeat_interval
        self.ttl = REGISTRY_TTL_HEARTBEATS * heartbeat_interval
        now = utcnow()
        self.info = WorkerInfo(
            id=worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=tuple(queues),
            pool=pool,
            concurrency=concurrency,
            version=_version(),
            started_at=now,
            heartbeat_at=now,
        )
        self._failing = False

    def snapshot(self) -> WorkerInfo:
        """The entry as of now (counts and heartbeat time updated)."""
        in_flight, processed, failed = self.counts()
        self.info = msgspec.structs.replace(
            self.info, heartbeat_at=utcnow(), in_flight=in_flight, processed=processed, failed=failed
        )
        return self.info

    async def register(self) -> bool:
        """Store or refresh the entry; False (logged) if the engine refused."""
        info = self.snapshot()
        try:
            with anyio.fail_after(max(self.interval, 1.0)):
                await self.queue.register_worker(info, self.ttl)
        except Exception as exc:
            if not self._failing:
                logger.warning("worker %s: registry update failed (%s); will retry at the next heartbeat", info.id, exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("worker %s: registry updates work again", info.id)
            self._failing = False
        return True

    async def run(self) -> None:
        """Refresh the entry every heartbeat interval, for ever (the pool cancels it), then tell the observers."""
        while True:
            await anyio.sleep(self.interval)
            await self.register()
            notify = self.lifecycle.worker_heartbeat
            if notify is not None:
                notify(self.info)

    async def unregister(self) -> None:
        """Remove the entry (the pool stopped); a failure is logged, the entry then expires by itself."""
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(_STOP_TIMEOUT):
                await self.queue.unregister_worker(self.info.id)
        except Exception as exc:
            logger.warning(
                "worker %s: removing it from the registry failed (%s); its entry expires within %.0f s",
                self.info.id,
                exc,
                self.ttl,
            )
