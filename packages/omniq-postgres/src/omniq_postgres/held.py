"""One pooled connection kept between enqueues, lent to one caller at a time.

asyncpg's ``Pool.acquire`` and ``release`` cost a timeout and a shielded task
per call: about 35-50 µs of client CPU of a single enqueue's 140-240 µs here,
5-15 % of the rate of sequential enqueues (a pool connection against one kept
out of the pool, interleaved rounds of 2,000, PostgreSQL on the same 2-core
machine). So the enqueue path keeps one connection out of its pool between
calls; a caller that finds it lent (concurrent enqueues) takes the pool's
path, as every other call does. A pool of one connection is never held from:
the other calls would wait for it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, TypeVar

import anyio
import asyncpg

from omniq.connection import fork_generation

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["HeldConnection"]

_T = TypeVar("_T")


class HeldConnection:
    """A connection acquired from a pool on first use and kept until :meth:`release` or a failure."""

    __slots__ = ("_busy", "_conn", "_generation", "_pool")

    def __init__(self) -> None:
        self._pool: asyncpg.Pool | None = None
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._generation = -1  # the fork generation that acquired it: a forked child never touches its parent's
        self._busy = False

    async def run(self, pool: asyncpg.Pool, call: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        """``await call(conn)`` on the held connection of ``pool``, or on a pooled one while it is lent.

        Any exception (a cancellation too) gives the connection back to the pool,
        which rolls back what the call left open; the next call acquires another.
        """
        if self._busy or pool.get_max_size() < 2:
            async with pool.acquire() as conn:
                return await call(conn)
        self._busy = True
        try:
            conn = self._conn
            if conn is None or self._pool is not pool or not _open(conn):
                # another pool (a reconnect, or a forked child's own): the old one owns its connection
                if conn is not None and self._pool is pool:
                    await self._give_back(pool, conn)
                self._conn = None
                conn = await pool.acquire()
                self._conn, self._pool, self._generation = conn, pool, fork_generation()
            try:
                result = await call(conn)
            except BaseException:
                self._conn = None
                await self._give_back(pool, conn)
                raise
            if self._conn is not conn:  # released while lent: the pool is closing
                await self._give_back(pool, conn)
            return result
        finally:
            self._busy = False

    async def release(self) -> None:
        """Give the connection back to its pool (before the pool closes); a lent one goes back after its call."""
        conn, pool = self._conn, self._pool
        self._conn = self._pool = None
        if conn is not None and pool is not None and not self._busy and self._generation == fork_generation():
            await self._give_back(pool, conn)

    @staticmethod
    async def _give_back(pool: asyncpg.Pool, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        with anyio.CancelScope(shield=True), contextlib.suppress(asyncpg.InterfaceError):  # the pool has it
            await pool.release(conn)


def _open(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
    """Whether the held connection is still open (a dead one may already be back in its pool)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # released: the pool took it back when it closed
        return False
