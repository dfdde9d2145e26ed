"""The NATS engine helper: error map, connecting, and the engine client each component holds.

Each component holds one :class:`omniq.connection.Connection` built from the
``open_*`` / ``close_*`` functions here and :data:`ERRORS`; the helper opens
once, maps errors at the boundary and is fork-safe. What a component's
client is:

* the task queue: a :class:`QueueClient` (the connection, the tasks and
  unique buckets, the engine clock, and this connection's claim state);
* the result storage: the results :class:`~omniq_nats.kv.Bucket`;
* the event storage: the nats-py client, its events stream created.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from omniq.connection import Connection, map_exceptions
from omniq.errors import BackendError, BackendUnavailableError, OmniQError, PayloadTooLargeError
from omniq_nats import subjects as names
from omniq_nats.clock import EngineClock
from omniq_nats.jetstream import APIError, api, ensure_stream, mux
from omniq_nats.kv import Bucket, ensure_kv
from omniq_nats.pauses import PausedQueues
from omniq_nats.wakeups import Wakeups

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from nats.aio.client import Client

    from omniq_nats.jetstream import Mux
    from omniq_nats.records import Record

__all__ = [
    "DEFAULT_URL",
    "ERRORS",
    "QueueClient",
    "close_connection",
    "close_queue",
    "close_results",
    "drop_prefix",
    "events_connection",
    "normalize_url",
    "open_connection",
    "open_events",
    "open_queue",
    "open_results",
    "queue_connection",
    "results_connection",
]

logger = logging.getLogger("omniq.nats")

T = TypeVar("T")

#: the URL used when none is configured.
DEFAULT_URL = "nats://127.0.0.1:4222"

#: driver exceptions -> OmniQ errors, most specific first.
ERRORS: dict[type[BaseException], type[OmniQError]] = {
    nats.errors.MaxPayloadError: PayloadTooLargeError,
    nats.errors.NoServersError: BackendUnavailableError,
    nats.errors.ConnectionClosedError: BackendUnavailableError,
    nats.errors.ConnectionReconnectingError: BackendUnavailableError,
    nats.errors.StaleConnectionError: BackendUnavailableError,
    nats.errors.UnexpectedEOF: BackendUnavailableError,
    nats.errors.OutboundBufferLimitError: BackendUnavailableError,
    nats.errors.NoRespondersError: BackendUnavailableError,
    nats.js.errors.ServiceUnavailableError: BackendUnavailableError,
    TimeoutError: BackendUnavailableError,  # nats.errors.TimeoutError and asyncio's
    asyncio.TimeoutError: BackendUnavailableError,
    ConnectionError: BackendUnavailableError,
    OSError: BackendUnavailableError,
    nats.errors.Error: BackendError,
}

_FIRST_CONNECT_ATTEMPTS = 2  # retries of the very first connect before BackendUnavailableError
_STREAM_NOT_FOUND = 10059  # JSStreamNotFoundErr


def normalize_url(url: str | None) -> str:
    """The URL to use: ``url``, or :data:`DEFAULT_URL` when none is given."""
    return url or DEFAULT_URL


async def open_connection(url: str, name: str, **options: Any) -> Client:
    """Connect to ``url``; connection failures raise BackendUnavailableError (URL redacted).

    A deliberate ``close()`` logs nothing above DEBUG: nats-py reports it
    through the same callbacks as a lost connection, after marking the client closed.
    """
    client: list[Client] = []  # set once connected: the callbacks ask it whether it is being closed

    def closing() -> bool:
        return bool(client) and client[0].is_closed

    async def on_error(exc: Exception) -> None:
        level = logging.DEBUG if closing() else logging.WARNING
        logger.log(level, "NATS connection error: %s", type(exc).__name__)

    async def on_disconnect() -> None:
        if closing():
            logger.debug("NATS connection closed")
        else:
            logger.info("NATS connection lost; reconnecting")

    settings: dict[str, Any] = {
        "name": name,
        "connect_timeout": 2,
        "reconnect_time_wait": 0.5,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "allow_reconnect": True,
        # No client-side buffering while disconnected: a publish then fails at once (mapped to
        # BackendUnavailableError) instead of failing the caller and being sent on reconnect anyway.
        "pending_size": 0,
    }
    settings.update(options)
    # nats-py applies max_reconnect_attempts to the first connect too: keep that one short, then
    # let a connected client reconnect for as long as it takes (a worker outlives server restarts).
    runtime_attempts = settings.pop("max_reconnect_attempts", -1)
    settings["max_reconnect_attempts"] = _FIRST_CONNECT_ATTEMPTS
    with map_exceptions(ERRORS, url=url):
        nc = await nats.connect(url, **settings)
    client.append(nc)
    nc.options["max_reconnect_attempts"] = runtime_attempts
    return nc


async def close_connection(nc: Client) -> None:
    """Close a connection; an error while closing is only logged (at DEBUG)."""
    try:
        await nc.close()
    except Exception:
        logger.debug("error while closing the NATS connection", exc_info=True)


async def _opened(url: str, name: str, options: dict[str, Any], setup: Callable[[Client], Awaitable[T]]) -> T:
    """Connect, then run ``setup(nc)``; the connection is closed again if the setup fails."""
    nc = await open_connection(url, name, **options)
    try:
        return await setup(nc)
    except BaseException:
        await close_connection(nc)
        raise


# -- the task queue ---------------------------------------------------------------------------------


class QueueClient:
    """What the task queue holds while connected: the engine's handles and this connection's claim state.

    Attributes:
        nc: the nats-py connection.
        mux: its request multiplexer.
        tasks: the tasks bucket (task key -> record), the authority.
        unique: the unique-keys bucket (unique key -> id of the task that took it).
        flow: the flow bucket (limit key -> :class:`~omniq_nats.flow.LimitState`; the paused queues).
        paused: this connection's copy of the paused queues.
        passed: how many fetched tickets this connection's claims let go without a claim and not at once
            back (dropped, failed, parked or put off until later): a claim pulls again after them.
        clock: the server's clock.
        wake: ticket publications seen, idle proofs, announced revisions.
        consumers: durable consumers known to exist.
        cache: task id -> (revision, record) as this connection last wrote it.
        workers: the worker registry's bucket, once a registry call created it.
    """

    def __init__(
        self,
        nc: Client,
        prefix: str,
        *,
        ack_wait: float,
        pause_recheck: float,
        tasks: Bucket,
        unique: Bucket,
        flow: Bucket,
    ) -> None:
        self.nc = nc
        self.mux: Mux = mux(nc)
        self.prefix = prefix
        self.ack_wait = ack_wait
        self.pause_recheck = pause_recheck
        self.tasks = tasks
        self.unique = unique
        self.clock = EngineClock(nc, tasks.stream, tasks.subject(names.CLOCK_KEY))
        self.wake = Wakeups(nc, prefix)
        self.flow = flow
        self.paused = PausedQueues(flow, self.wake, prefix)
        self.passed = 0  # tickets claims let go without a claim (see claiming._pull_take)
        self.consumers: set[str] = set()
        self.cache: dict[str, tuple[int, Record]] = {}
        self.workers: Bucket | None = None

    def remember_due(self, moment: datetime | None) -> None:
        """A nak-delayed ticket comes back at ``moment`` (engine time): an idle claimer looks again then."""
        if moment is not None:
            self.wake.remember_due(self.clock.local(moment))


def queue_connection(
    url: str, prefix: str, ack_wait: float, pause_recheck: float, options: dict[str, Any]
) -> Connection[QueueClient]:
    """The task queue's connection: opens a :class:`QueueClient` on first use (see :func:`open_queue`)."""
    return Connection(
        url,
        open=functools.partial(open_queue, url, prefix, ack_wait, pause_recheck, options),
        close=close_queue,
        errors=ERRORS,
    )


async def open_queue(
    url: str, prefix: str, ack_wait: float, pause_recheck: float, options: dict[str, Any]
) -> QueueClient:
    """Connect, create the work and lease streams and the tasks, unique and flow buckets, read the clock."""

    async def setup(nc: Client) -> QueueClient:
        work = StreamConfig(
            name=names.work_stream(prefix),
            subjects=[f"{prefix}.work.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=1,
        )
        leases = StreamConfig(
            name=names.leases_stream(prefix),
            subjects=[names.lease_subjects(prefix)],
            storage=StorageType.FILE,
            max_age=7 * 86400.0,
            num_replicas=1,
        )
        await ensure_stream(nc, work)
        await ensure_stream(nc, leases)
        tasks = await ensure_kv(nc, names.tasks_bucket(prefix))
        unique = await ensure_kv(nc, names.unique_bucket(prefix))
        flow = await ensure_kv(nc, names.flow_bucket(prefix))
        client = QueueClient(
            nc, prefix, ack_wait=ack_wait, pause_recheck=pause_recheck, tasks=tasks, unique=unique, flow=flow
        )
        await client.clock.sync()
        await client.paused.start()
        return client

    return await _opened(url, "omniq-task-queue", options, setup)


async def close_queue(client: QueueClient) -> None:
    """Close the task queue's connection."""
    await close_connection(client.nc)


# -- the result and event storages ------------------------------------------------------------------


def results_connection(url: str, prefix: str, ttl: float | None, options: dict[str, Any]) -> Connection[Bucket]:
    """The result storage's connection: opens the results bucket on first use."""
    return Connection(
        url, open=functools.partial(open_results, url, prefix, ttl, options), close=close_results, errors=ERRORS
    )


async def open_results(url: str, prefix: str, ttl: float | None, options: dict[str, Any]) -> Bucket:
    """Connect and create the results bucket (max_age ``ttl``)."""

    async def setup(nc: Client) -> Bucket:
        return await ensure_kv(nc, names.results_bucket(prefix), ttl=ttl)

    return await _opened(url, "omniq-result-storage", options, setup)


async def close_results(bucket: Bucket) -> None:
    """Close the result storage's connection."""
    await close_connection(bucket.nc)


def events_connection(url: str, prefix: str, ttl: float | None, options: dict[str, Any]) -> Connection[Client]:
    """The event storage's connection: opens a client, its events stream created, on first use."""
    return Connection(
        url, open=functools.partial(open_events, url, prefix, ttl, options), close=close_connection, errors=ERRORS
    )


async def open_events(url: str, prefix: str, ttl: float | None, options: dict[str, Any]) -> Client:
    """Connect and create the events stream (max_age ``ttl``)."""

    async def setup(nc: Client) -> Client:
        config = StreamConfig(
            name=names.events_stream(prefix),
            subjects=[f"{prefix}.events.*"],
            max_age=ttl,
            storage=StorageType.FILE,
            num_replicas=1,
        )
        await ensure_stream(nc, config)
        return nc

    return await _opened(url, "omniq-event-storage", options, setup)


# -- teardown ---------------------------------------------------------------------------------------


async def drop_prefix(url: str | None, prefix: str) -> int:
    """Delete every stream and bucket OmniQ created under ``prefix``; return how many existed.

    For tests and teardown scripts: all tasks, results and events under the
    prefix are gone afterwards.
    """
    streams = [
        names.work_stream(prefix),
        names.leases_stream(prefix),
        names.events_stream(prefix),
        names.kv_stream(names.tasks_bucket(prefix)),
        names.kv_stream(names.unique_bucket(prefix)),
        names.kv_stream(names.flow_bucket(prefix)),
        names.kv_stream(names.workers_bucket(prefix)),
        names.kv_stream(names.results_bucket(prefix)),
    ]
    url = normalize_url(url)
    nc = await open_connection(url, "omniq-admin")
    deleted = 0
    try:
        with map_exceptions(ERRORS, url=url):
            for stream in streams:
                try:
                    await api(nc, f"STREAM.DELETE.{stream}")
                except APIError as exc:
                    if exc.code != _STREAM_NOT_FOUND:
                        raise
                    continue
                deleted += 1
    finally:
        await nc.close()
    return deleted
