"""Database: one SQLite file in one process, on one aiosqlite connection, with group commit.

Every job (a claim, a finish, an ``executemany`` insert) is one function run
on the aiosqlite connection's thread: one hop per batch, not one per
statement. Writes run under ``BEGIN IMMEDIATE`` (a deferred transaction that
later upgrades to a write is not covered by the busy timeout), each in this
process's turn among the file's writers (:mod:`omniq_sqlite._writers`), and
are retried while a connection that is not ours holds the lock, so "database is locked" never reaches
the caller: after ``busy_timeout`` seconds it becomes
:class:`~omniq.errors.BackendUnavailableError`.

Group commit: writes wait in a queue of ours, and one job on the thread
commits everything queued (a worker's claim, finish and event batches, the
writes of concurrent producers) in one transaction, each under its own
savepoint, so one failing write rolls back alone.

Small writes on an idle database (a single enqueue) skip the hop
(:meth:`Database.write_small`): they run on the caller's thread, under the
lock the connection's thread holds while inside SQLite, so the process still
has one writer at a time; such a write never waits for another process's
lock (the connection's busy timeout is 0) and anything that stops it hands
the job to the thread, which retries as above.

Checkpoints (the only fsyncs under ``synchronous=NORMAL``) run on a second
aiosqlite connection's thread, at most every 0.2 s while writes keep coming,
so neither the writer thread nor a caller's event loop waits on the disk.

How a job reaches aiosqlite's thread, and how sqlite3's errors become
OmniQ's, is :mod:`omniq_sqlite.driver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from omniq.errors import BackendError
from omniq_sqlite._writers import WritersLock
from omniq_sqlite.driver import idle, raw, retry_while_busy, run, submit, translate

if TYPE_CHECKING:
    import aiosqlite

    from omniq_sqlite._wake import WakeHub

__all__ = ["Database"]

logger = logging.getLogger("omniq.sqlite")

T = TypeVar("T")

#: most write jobs committed together in one transaction (group commit).
_MAX_GROUP = 64
#: seconds between checkpoints while writes keep coming (one fsync covers many commits).
_CHECKPOINT_PERIOD = 0.2
#: returned by Database._try_inline when the job must go to the connection's thread.
_MISS = object()

_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class Database:
    """One file's connection in one process: jobs on aiosqlite's thread, group commit, checkpoints.

    Built by :func:`omniq_sqlite.connection.open_database`; components reach it
    through their :class:`omniq.connection.Connection`.
    """

    def __init__(
        self,
        path: str,
        conn: aiosqlite.Connection,
        checkpointer: aiosqlite.Connection | None,
        *,
        busy_timeout: float,
        inline: bool,
        hub: WakeHub,
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.hub = hub
        #: whether small writes may run on the caller's thread (WAL, no fsync on commit, a checkpointer).
        self.inline = inline
        self._conn = conn
        self._checkpointer = checkpointer
        # Held by whichever thread is inside SQLite on the connection (its own, or a caller's inline
        # write): one writer per process at a time, and the fork guard waits on it.
        self._lock = threading.Lock()
        #: taken inside ``_lock`` around each write attempt: this process's turn among the file's writers.
        self._writers = WritersLock(path)
        self._checkpoint_lock = threading.Lock()
        self._pending: deque[_Job] = deque()
        self._pending_lock = threading.Lock()
        self._draining = False  # a drain job is queued or running on the thread
        self._dirty = False  # commits since the last checkpoint started
        self._checkpointing = False  # a checkpoint loop is queued or running
        self._dirty_lock = threading.Lock()
        self._closing = threading.Event()  # set by close(): no new jobs, the checkpoint loop ends

    def __repr__(self) -> str:
        return f"<Database {self.path!r}>"

    @property
    def locks(self) -> tuple[threading.Lock, ...]:
        """The locks held while a thread of ours is inside SQLite (the fork guard takes them)."""
        return (self._lock, self._checkpoint_lock)

    # -- callers' side ---------------------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the connection's thread, outside a transaction."""
        self._check_open()
        with anyio.CancelScope(shield=True):
            result: T = await run(self._conn, self._read, fn, args)
        return result

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` inside ``BEGIN IMMEDIATE ... COMMIT``, grouped with other queued writes.

        ``fn`` may run more than once (it is retried while the database is
        locked by another process), so it must only touch the database. The
        wait is shielded: a committed result is never dropped by a cancel.
        """
        self._check_open()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._pending_lock:
            self._pending.append((fn, args, future))
            start = not self._draining
            self._draining = True
        if start:
            submit(self._conn, self._drain)
        with anyio.CancelScope(shield=True):
            result = await future
        return result

    async def write_small(self, fn: Callable[..., T], *args: Any, notify: str | None = None) -> T:
        """Like :meth:`write`, but run ``fn`` on the calling thread when the database is idle.

        For short jobs only (a handful of rows): an inline run blocks the
        caller's event loop for one small transaction (tens of microseconds,
        no fsync), which is cheaper than the two thread wake-ups of a hop. It
        yields to the event loop first, so a producer loop never starves other
        tasks. When the thread is busy, another process holds the write lock,
        or anything fails, the job goes through :meth:`write`; ``fn`` may
        therefore run more than once.

        ``notify``: a wake-up channel to hint after the commit (see :meth:`notify`).
        """
        result: Any = _MISS
        if self.inline:
            await asyncio.sleep(0)  # asyncio directly: anyio's backend lookup costs more than the yield
            result = self._try_inline(fn, args)
        if result is _MISS:
            result = await self.write(fn, *args)
        if notify is not None:
            # From here either way: a hint queued on the thread would make the next small write miss.
            self.notify(notify, here=True)
        return result  # type: ignore[no-any-return]

    def write_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`write`, run to the end on the calling thread (one with no event loop to return to).

        The sync API's blocking enqueue: the job waits for the connection's
        lock (while the connection's thread is inside SQLite) and retries while
        another process writes, exactly as on the connection's thread, with no
        hand-off to that thread and back.
        """
        self._check_open()
        return self._retrying(partial(_call, fn, args))

    def read_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`read`, run on the calling thread (the sync API's reads), under the connection's lock."""
        self._check_open()
        return self._read(fn, args)

    def notify(self, kind: str, keys: Iterable[str] | None = None, *, here: bool = False) -> None:
        """Wake local waiters now and hint other processes (call after the commit).

        The datagrams go out from the connection's thread, or from the calling
        thread when ``here`` is true (a few non-blocking syscalls; used after
        an inline write, so that a sequential producer does not wake the
        thread for every call).
        """
        key_list = list(keys) if keys is not None else None
        self.hub.notify_local(kind, key_list)
        if self.hub.cross_process:
            if here:
                self._broadcast(kind, key_list)
            else:
                submit(self._conn, partial(self._broadcast, kind, key_list))

    async def close(self) -> None:
        """Stop the checkpointer, close both connections, the wake-up hub and the writers' lock file."""
        self.inline = False
        self.hub.close()
        self._closing.set()
        with anyio.CancelScope(shield=True):
            if self._checkpointer is not None:
                await _close(self._checkpointer, self._checkpoint_lock)
            await _close(self._conn, self._lock)
        self._writers.close()  # no write runs after the connection's thread has closed it

    def _check_open(self) -> None:
        if self._closing.is_set():
            raise BackendError(f"SQLite database {self.path} is closed")

    def _broadcast(self, kind: str, keys: list[str] | None) -> None:
        try:
            self.hub.send_remote(kind, keys)
        except OSError as exc:
            logger.debug("SQLite wake-up hint failed: %s", exc)

    def _try_inline(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Run a write job on this thread if the connection's thread is idle; ``_MISS`` when it must go there."""
        if self._draining or not idle(self._conn) or not self._lock.acquire(blocking=False):
            return _MISS
        try:
            if not self.inline:
                return _MISS
            if not self._writers.acquire(blocking=False):  # another process's turn: never wait on the loop
                return _MISS
            conn = raw(self._conn)
            try:
                conn.execute("BEGIN IMMEDIATE")  # busy timeout 0: fails at once while another process writes
                result = fn(conn, *args)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    logger.debug("SQLite inline write on %s handed to the connection's thread: %s", self.path, exc)
                    return _MISS
                raise
            finally:
                self._writers.release()
        finally:
            self._lock.release()
        self._committed()
        return result

    # -- the connection's thread -----------------------------------------------------------------

    def _read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        return self._retrying(lambda conn: fn(conn, *args), write=False)

    def _drain(self) -> None:
        """Commit the queued writes (up to _MAX_GROUP) in one transaction; queue itself again if more wait."""
        with self._pending_lock:
            group = [self._pending.popleft() for _ in range(min(len(self._pending), _MAX_GROUP))]
        try:
            if len(group) == 1:
                fn, args, _ = group[0]
                outcomes: list[tuple[Any, BaseException | None]] = [(self._retrying(partial(_call, fn, args)), None)]
            else:
                outcomes = []
                self._retrying(partial(_run_group, group, outcomes, self.path))
        except BaseException as exc:
            outcomes = [(None, exc)] * len(group)
        # One wake-up per caller's loop, not one per job: each costs this thread a send and the GIL back.
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        for (*_, future), (value, error) in zip(group, outcomes, strict=True):
            answers.setdefault(future.get_loop(), []).append((future, value, error))
        for loop, answered in answers.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(_resolve_all, answered)
        with self._pending_lock:
            if self._pending:
                submit(self._conn, self._drain)  # behind what was queued meanwhile (reads, hints)
            else:
                self._draining = False

    def _retrying(self, body: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """Run ``body`` (in ``BEGIN IMMEDIATE ... COMMIT`` when writing), retrying while another process is busy."""
        result = retry_while_busy(partial(self._once, body, write), self.busy_timeout, self.path)
        if write:
            self._committed()
        return result

    def _once(self, body: Callable[[sqlite3.Connection], T], write: bool) -> T:
        """One attempt of :meth:`_retrying`, under the connection's lock."""
        conn = raw(self._conn)
        with self._lock:
            if not write:
                return body(conn)
            self._writers.acquire()
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                self._writers.release()
        return result

    # -- checkpoints (on the checkpointer connection's thread) -----------------------------------

    def _committed(self) -> None:
        """Note a commit: start the checkpoint loop unless it runs already."""
        if self._dirty or self._checkpointer is None:
            return  # the running loop sees it
        with self._dirty_lock:
            self._dirty = True
            if self._checkpointing:
                return
            self._checkpointing = True
        submit(self._checkpointer, self._checkpoint_loop)

    def _checkpoint_loop(self) -> None:
        assert self._checkpointer is not None
        conn = raw(self._checkpointer)
        while True:
            with self._dirty_lock:
                if not self._dirty or self._closing.is_set():
                    self._checkpointing = False
                    return
                self._dirty = False
            with self._checkpoint_lock:
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    logger.debug("SQLite checkpoint of %s skipped: %s", self.path, exc)
            self._closing.wait(_CHECKPOINT_PERIOD)  # let writes accumulate: one fsync covers many commits


def _call(fn: Callable[..., T], args: tuple[Any, ...], conn: sqlite3.Connection) -> T:
    return fn(conn, *args)


def _run_group(
    group: list[_Job], outcomes: list[tuple[Any, BaseException | None]], path: str, conn: sqlite3.Connection
) -> None:
    """Several write jobs in one transaction, each under its own savepoint (one that raises rolls back alone)."""
    outcomes.clear()  # the whole group may be retried while the database is busy
    for fn, args, _ in group:
        conn.execute("SAVEPOINT omniq_job")
        try:
            value = fn(conn, *args)
        except Exception as exc:
            conn.execute("ROLLBACK TO omniq_job")
            conn.execute("RELEASE omniq_job")
            outcomes.append((None, translate(exc, path) if isinstance(exc, sqlite3.Error) else exc))
        else:
            conn.execute("RELEASE omniq_job")
            outcomes.append((value, None))


async def _close(conn: aiosqlite.Connection, lock: threading.Lock) -> None:
    """Close the sqlite3 connection on its thread under ``lock`` (the fork guard), then stop the thread."""

    def close_raw() -> None:
        with lock:
            raw(conn).close()

    with contextlib.suppress(sqlite3.Error, ValueError):
        await run(conn, close_raw)
    await conn.close()


def _resolve_all(answered: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in answered:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
