"""The PostgreSQL engine helper: URLs, the driver's errors, pools, and LISTEN wake-ups.

Each component holds one :class:`omniq.connection.Connection` to a pool
(:func:`pool_connection`): opening it creates the pool and migrates the
schema, closing it closes the pool; the core helper adds the lock, the fork
safety and the error mapping (:data:`ERRORS`).

A :class:`Listener` owns one dedicated connection (outside the pool, since a
pooled connection would lose its LISTEN when handed to someone else), also
held through a core ``Connection``. It connects on demand, re-LISTENs after
the connection dies, and calls ``on_reset`` once per (re)connect so waiters
re-check the database: NOTIFYs sent while no connection was listening are
lost by design in PostgreSQL. :class:`QueueWakeups` turns the task queue's
channel into per-queue wake-ups for idle workers.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import asyncpg

from omniq.connection import Connection, fork_generation
from omniq.errors import BackendError, BackendUnavailableError, ConfigurationError, OmniQError, redact_url
from omniq_postgres.schema import migrate

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from omniq_postgres.schema import Names

__all__ = [
    "DEFAULT_URL",
    "ERRORS",
    "Listener",
    "QueueWakeups",
    "close_pool",
    "dsn_identity",
    "normalize_url",
    "open_pool",
    "pool_connection",
]

logger = logging.getLogger("omniq.postgres")

DEFAULT_URL = "postgresql://127.0.0.1:5432/postgres"

#: driver exception -> OmniQ error; first match wins, so specific classes come first.
ERRORS: Mapping[type[BaseException], type[OmniQError]] = {
    asyncpg.PostgresConnectionError: BackendUnavailableError,  # class 08, incl. ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError: BackendUnavailableError,  # 57P03: starting up / recovering
    asyncpg.AdminShutdownError: BackendUnavailableError,  # 57P01: terminated by an administrator
    asyncpg.CrashShutdownError: BackendUnavailableError,  # 57P02
    asyncpg.TooManyConnectionsError: BackendUnavailableError,  # 53300
    asyncpg.InvalidAuthorizationSpecificationError: BackendUnavailableError,  # 28000: unknown role
    asyncpg.InvalidPasswordError: BackendUnavailableError,  # 28P01
    TimeoutError: BackendUnavailableError,  # connect/command timeouts
    asyncio.TimeoutError: BackendUnavailableError,  # distinct from TimeoutError before 3.11
    OSError: BackendUnavailableError,  # refused, reset, unreachable, DNS
    asyncpg.PostgresError: BackendError,  # anything else the server rejected
    asyncpg.InterfaceError: BackendError,  # driver misuse or a closed pool
}

#: what closing a connection or pool may raise when the server is already gone.
_CLOSE_ERRORS = (TimeoutError, asyncio.TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def normalize_url(url: str | None) -> str:
    """Return a URL asyncpg accepts (``postgres://``, ``postgresql://``, ``postgresql+asyncpg://``)."""
    url = url or DEFAULT_URL
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError(f"url={redact_url(url)!r} is not valid: expected postgresql://user@host:port/db")
    scheme = scheme.lower().split("+", 1)[0]
    if scheme not in {"postgres", "postgresql"}:
        raise ConfigurationError(
            f"url={redact_url(url)!r} is not valid for the postgres backend: expected a postgresql:// URL"
        )
    return f"postgresql://{rest}"


def dsn_identity(url: str) -> tuple[str, int, str, str]:
    """(host, port, database, user) of a URL: two components with equal identities share a database."""
    parts = urlsplit(url)
    return (
        (parts.hostname or "").lower(),
        parts.port or 5432,
        parts.path.lstrip("/"),
        parts.username or "",
    )


# -- pools ----------------------------------------------------------------------------------------


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool ``reset`` hook: nothing to undo, so no reset query.

    asyncpg's default reset sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`` on every release, a second round trip after each
    pooled statement (a third of single-enqueue time, and on the claim path).
    OmniQ's pooled connections never change session state: no SET, no LISTEN
    (listeners have their own connections), no cursors, only transaction-level
    advisory locks. asyncpg still rolls back a transaction left open before
    calling this.
    """


async def open_pool(url: str, names: Names, options: Mapping[str, Any]) -> asyncpg.Pool:
    """Open a pool and bring the schema up to date.

    Args:
        url: the database URL.
        names: the schema to migrate.
        options: passed to :func:`asyncpg.create_pool` (``min_size``, ``max_size``...).
    """
    kwargs: dict[str, Any] = {"min_size": 1, "max_size": 10, "reset": _keep_session, **_CONNECTION_DEFAULTS}
    kwargs.update(options)
    pool: asyncpg.Pool = await asyncpg.create_pool(url, **kwargs)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, names)
    except BaseException:
        pool.terminate()
        raise
    return pool


#: every connection's timeouts (pooled or single), unless the component's options say otherwise.
_CONNECTION_DEFAULTS: Mapping[str, Any] = {"timeout": 10.0, "command_timeout": 60.0}
#: :func:`asyncpg.create_pool`'s own keyword arguments: the others are a connection's.
_POOL_ONLY = frozenset(
    {"min_size", "max_size", "max_queries", "max_inactive_connection_lifetime", "setup", "init", "reset", "connect"}
)


async def open_single(url: str, options: Mapping[str, Any]) -> asyncpg.Connection:
    """One connection with the pool's connection settings (the sync API's enqueue, :mod:`omniq.thread_clients`).

    The schema is the pool's to migrate: callers have connected the component first.
    """
    kwargs = {**_CONNECTION_DEFAULTS, **{k: v for k, v in options.items() if k not in _POOL_ONLY}}
    connection: asyncpg.Connection = await asyncpg.connect(url, **kwargs)
    return connection


async def close_single(connection: asyncpg.Connection) -> None:
    """Close one connection; terminate it when the server does not answer within 10 s."""
    try:
        await asyncio.wait_for(connection.close(), 10)
    except _CLOSE_ERRORS:
        connection.terminate()


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close a pool, shielded; terminate it when the server does not answer within 10 s."""
    with anyio.CancelScope(shield=True):
        try:
            with anyio.fail_after(10):
                await pool.close()
        except _CLOSE_ERRORS:
            pool.terminate()


def pool_connection(url: str, names: Names, options: Mapping[str, Any]) -> Connection[asyncpg.Pool]:
    """A component's connection: a pool of its own on ``url``, the schema ``names`` migrated on open."""
    return Connection(url, open=partial(open_pool, url, names, dict(options)), close=close_pool, errors=ERRORS)


# -- LISTEN ---------------------------------------------------------------------------------------


async def _close_listener(conn: asyncpg.Connection) -> None:
    if conn.is_closed():
        return
    with anyio.CancelScope(shield=True):
        try:
            await conn.close(timeout=5.0)
        except _CLOSE_ERRORS:
            conn.terminate()


class Listener:
    """A dedicated LISTEN connection that reconnects on demand.

    Args:
        url: the database URL.
        channel: the channel to LISTEN on.
        on_notify: called with each payload (in the event loop).
        on_reset: called after every (re)connect and when the connection dies,
            so waiters wake and re-check instead of trusting lost NOTIFYs.
    """

    def __init__(self, url: str, channel: str, on_notify: Callable[[str], None], on_reset: Callable[[], None]) -> None:
        self._url = url
        self._channel = channel
        self._on_notify = on_notify
        self._on_reset = on_reset
        self._connection: Connection[asyncpg.Connection] = Connection(
            url, open=self._listen, close=_close_listener, errors=ERRORS
        )
        self._lock = anyio.Lock()
        self._generation = fork_generation()
        self._failing = False
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether a live connection of this process is listening right now."""
        return self._connection.connected and not self._connection.current.is_closed()

    def backend_pid(self) -> int | None:
        """Server process id of the listening connection (tests terminate it)."""
        return self._connection.current.get_server_pid() if self.connected else None

    async def ensure(self) -> bool:
        """Make sure a connection is listening.

        Returns:
            True when listening, False when the database cannot be reached
            right now (callers fall back to polling).
        """
        if self.connected:
            return True
        if self._generation != fork_generation():  # a forked child: the parent's lock is not ours
            self._generation, self._lock = fork_generation(), anyio.Lock()
        async with self._lock:
            if self.connected:
                return True
            if self._closed:
                return False
            try:
                await self._connection.close()  # the dead connection, if any (a no-op after a fork)
                await self._connection.connect()
            except BackendError as exc:
                level = logging.DEBUG if self._failing else logging.WARNING
                logger.log(level, "cannot LISTEN on %s, polling instead: %s", self._channel, exc)
                self._failing = True
                return False
            if self._failing:
                logger.info("LISTEN on %s restored", self._channel)
            self._failing = False
        # Anything sent while nobody listened is lost: make every waiter look again.
        self._on_reset()
        return True

    async def close(self) -> None:
        """Stop listening and close the connection (idempotent)."""
        self._closed = True
        await self._connection.close()

    async def _listen(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(self._url, timeout=10.0)
        try:
            await conn.add_listener(self._channel, self._notified)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        return conn

    def _notified(self, connection: object, pid: int, channel: str, payload: str) -> None:
        self._on_notify(payload)

    def _terminated(self, connection: object) -> None:
        if not self._closed:
            logger.info("LISTEN connection for %s closed; will reconnect on the next wait", self._channel)
            self._on_reset()


class QueueWakeups:
    """Idle workers of one task queue, woken by NOTIFY on the queues they wait for.

    Bookkeeping: a counter bumped on every NOTIFY and listener reset, the
    counter value of each queue's last NOTIFY, and each queue set's counter
    when it last started a claim, so a NOTIFY that arrived between a claim and
    the next wait is not slept through.

    Args:
        url: the database URL.
        channel: the task queue's channel (payload = queue name).
        poll_interval: longest sleep while LISTEN is unavailable.
    """

    def __init__(self, url: str, channel: str, poll_interval: float) -> None:
        self._poll_interval = poll_interval
        self._signal_seq = 0
        self._reset_seq = 0
        self._queue_seq: dict[str, int] = {}
        self._claim_marks: dict[frozenset[str], int] = {}
        self._waiters: set[tuple[frozenset[str], anyio.Event]] = set()
        self.listener = Listener(url, channel, self._notified, self.wake_all)

    def claiming(self, queues: Sequence[str]) -> None:
        """Note that a claim on ``queues`` starts: NOTIFYs from now on make the next wait return."""
        self._claim_marks[frozenset(queues)] = self._signal_seq

    async def wait(
        self, queues: Sequence[str], timeout: float, next_due: Callable[[], Awaitable[float | None]]
    ) -> None:
        """Block until a NOTIFY for ``queues``, the next scheduled task or ``timeout`` (polling without LISTEN).

        Args:
            queues: the queues the worker claims from.
            timeout: the longest wait, in seconds.
            next_due: seconds until the earliest scheduled task of ``queues`` is due (None: none is).
        """
        key = frozenset(queues)
        mark = self._claim_marks.pop(key, self._signal_seq)
        if self._signalled_since(key, mark):
            return
        listening = await self.listener.ensure()
        if self._signalled_since(key, mark):
            return
        # NOTIFY covers new work; a scheduled task falling due needs a timer.
        due_in = await next_due()
        if due_in is not None:
            if due_in <= 0:
                return
            timeout = min(timeout, due_in)
        if not listening:
            await anyio.sleep(min(timeout, self._poll_interval))
            return
        if self._signalled_since(key, mark):  # a NOTIFY arrived while we asked for the next due time
            return
        waiter = (key, anyio.Event())
        self._waiters.add(waiter)
        try:
            with anyio.move_on_after(timeout):
                await waiter[1].wait()
        finally:
            self._waiters.discard(waiter)

    async def close(self) -> None:
        """Stop listening and wake every waiter."""
        await self.listener.close()
        self.wake_all()

    def wake_all(self) -> None:
        """Wake every waiter (the listener reconnected or closed: NOTIFYs may have been lost)."""
        self._signal_seq += 1
        self._reset_seq = self._signal_seq
        for _, event in self._waiters:
            event.set()

    def _signalled_since(self, queues: frozenset[str], mark: int) -> bool:
        if self._reset_seq > mark:
            return True
        return any(self._queue_seq.get(queue, -1) > mark for queue in queues)

    def _notified(self, queue: str) -> None:
        self._signal_seq += 1
        self._queue_seq[queue] = self._signal_seq
        for queues, event in self._waiters:
            if queue in queues:
                event.set()
