"""What :class:`~omniq_sqlite.database.Database` needs of its drivers: aiosqlite's job queue, sqlite3's errors.

aiosqlite has no public way to run a function on its thread; we use its job
queue (``_execute`` / ``_tx``) as SQLAlchemy's aiosqlite adapter does, in
:func:`run`, :func:`submit`, :func:`idle` and :func:`raw` only.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from omniq.errors import BackendError, BackendUnavailableError, OmniQError

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["idle", "is_busy", "raw", "retry_while_busy", "run", "submit", "translate"]

logger = logging.getLogger("omniq.sqlite")

T = TypeVar("T")

_BUSY_CODES = {5, 6, 261, 517}  # SQLITE_BUSY, SQLITE_LOCKED, BUSY_RECOVERY, BUSY_SNAPSHOT


# -- aiosqlite's job queue -----------------------------------------------------------------------


async def run(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` on the connection's thread and return its result."""
    return await conn._execute(fn, *args)  # type: ignore[no-any-return,no-untyped-call]


def submit(conn: aiosqlite.Connection, fn: Callable[[], object]) -> None:
    """Queue ``fn()`` on the connection's thread without waiting for it."""
    conn._tx.put_nowait((None, fn))


def idle(conn: aiosqlite.Connection) -> bool:
    """Whether the connection's thread has nothing queued."""
    return conn._tx.empty()


def raw(conn: aiosqlite.Connection) -> sqlite3.Connection:
    """The sqlite3 connection under aiosqlite's (use it on that thread, or under the database's lock)."""
    return conn._conn


# -- errors --------------------------------------------------------------------------------------


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds the lock (retry), not that something is wrong."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code in _BUSY_CODES
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def retry_while_busy(call: Callable[[], T], timeout: float, path: str) -> T:
    """``call()``, again (1 ms, doubling up to 50 ms) while another connection holds the lock, up to ``timeout`` s.

    Raises:
        BackendUnavailableError: still locked after ``timeout`` s, or another operational error.
        BackendError: any other sqlite3 error (:func:`translate`).
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            return call()
        except sqlite3.Error as exc:  # noqa: PERF203 - the loop exists to retry this very error
            if not is_busy(exc):
                raise translate(exc, path) from exc
            if time.monotonic() >= deadline:
                raise BackendUnavailableError(
                    f"SQLite database {path} stayed locked by another connection for "
                    f"{timeout:g} s (busy_timeout); retry later"
                ) from exc
            logger.debug("SQLite database %s is busy; retrying in %.3f s", path, delay)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def translate(exc: sqlite3.Error, path: str) -> OmniQError:
    """Map a sqlite3 exception to an OmniQ error (never the raw "database is locked")."""
    if isinstance(exc, sqlite3.OperationalError):
        return BackendUnavailableError(f"SQLite database {path} is unavailable: {exc}")
    return BackendError(f"SQLite database {path} failed: {type(exc).__name__}: {exc}")
