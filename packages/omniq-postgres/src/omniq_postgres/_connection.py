"""Connection plumbing shared by the three components: URLs, pools, errors, LISTEN.

The :class:`Listener` owns one dedicated connection (outside the pool, since a
pooled connection would lose its LISTEN when handed to someone else). It
connects on demand, re-LISTENs after the connection dies, and calls
``on_reset`` once per (re)connect so waiters re-check the database: NOTIFYs
sent while no connection was listening are lost by design in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import asyncpg

from omniq.base import map_exceptions
from omniq.errors import BackendError, BackendUnavailableError, ConfigurationError, OmniQError, redact_url
from omniq_postgres.schema import Names, migrate

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["DEFAULT_URL", "ERRORS", "Listener", "PoolOwner", "create_pool", "dsn_identity", "normalize_url"]

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


async def create_pool(url: str, options: Mapping[str, Any]) -> asyncpg.Pool:
    """Open a pool; ``options`` are passed to :func:`asyncpg.create_pool` (min_size, max_size...)."""
    kwargs: dict[str, Any] = {
        "min_size": 1,
        "max_size": 10,
        "timeout": 10.0,
        "command_timeout": 60.0,
        "reset": _keep_session,
    }
    kwargs.update(options)
    with map_exceptions(ERRORS, url=url):
        pool: asyncpg.Pool = await asyncpg.create_pool(url, **kwargs)
    return pool


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
        self._conn: asyncpg.Connection | None = None
        self._lock = anyio.Lock()
        self._failing = False
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether a live connection is listening right now."""
        return self._conn is not None and not self._conn.is_closed()

    def backend_pid(self) -> int | None:
        """Server process id of the listening connection (tests terminate it)."""
        return self._conn.get_server_pid() if self.connected and self._conn is not None else None

    async def ensure(self) -> bool:
        """Make sure a connection is listening.

        Returns:
            True when listening, False when the database cannot be reached
            right now (callers fall back to polling).
        """
        if self.connected:
            return True
        async with self._lock:
            if self.connected:
                return True
            if self._closed:
                return False
            try:
                with map_exceptions(ERRORS, url=self._url):
                    conn = await asyncpg.connect(self._url, timeout=10.0)
                    await conn.add_listener(self._channel, self._notified)
            except BackendError as exc:
                level = logging.DEBUG if self._failing else logging.WARNING
                logger.log(level, "cannot LISTEN on %s, polling instead: %s", self._channel, exc)
                self._failing = True
                return False
            conn.add_termination_listener(self._terminated)
            self._conn = conn
            if self._failing:
                logger.info("LISTEN on %s restored", self._channel)
            self._failing = False
        # Anything sent while nobody listened is lost: make every waiter look again.
        self._on_reset()
        return True

    def _notified(self, connection: object, pid: int, channel: str, payload: str) -> None:
        self._on_notify(payload)

    def _terminated(self, connection: object) -> None:
        if connection is self._conn:
            self._conn = None
        if not self._closed:
            logger.info("LISTEN connection for %s closed; will reconnect on the next wait", self._channel)
            self._on_reset()

    async def close(self) -> None:
        """Stop listening and close the connection (idempotent)."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with anyio.CancelScope(shield=True):
                try:
                    await conn.close(timeout=5.0)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
                    conn.terminate()


class PoolOwner:
    """Shared connect/close for the three components: one pool, a migrated schema.

    Mixed into each component class ahead of the omniq base class.
    """

    def _init_pool_owner(self, url: str | None, schema: str, pool_options: Mapping[str, Any]) -> None:
        self.url = normalize_url(url)
        self.names = Names(schema)
        self._pool_options = dict(pool_options)
        self._pool: asyncpg.Pool | None = None
        self._connect_lock = anyio.Lock()

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this component's tables."""
        return self.names.schema

    async def connect(self) -> None:
        """Open the pool and migrate the schema (idempotent)."""
        if self._pool is not None:
            return
        async with self._connect_lock:
            if self._pool is not None:
                return
            pool = await create_pool(self.url, self._pool_options)
            try:
                with map_exceptions(ERRORS, url=self.url):
                    async with pool.acquire() as conn:
                        await migrate(conn, self.names)
            except BaseException:
                pool.terminate()
                raise
            self._pool = pool

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            await self.connect()
        assert self._pool is not None
        return self._pool

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                try:
                    with anyio.fail_after(10):
                        await pool.close()
                except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    pool.terminate()
