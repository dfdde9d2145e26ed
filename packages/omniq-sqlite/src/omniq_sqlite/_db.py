"""One sqlite3 connection per database file and process, owned by one thread.

Every component of a process that points at the same file shares one
:class:`Database`: its thread runs whole batches (a claim, a finish, an
``executemany`` insert) per hop from the event loop, so the per-call cost is
one thread hop, not one per row, and writers of one process never contend
for SQLite's write lock with each other. Writes run under ``BEGIN
IMMEDIATE`` (a deferred transaction that later upgrades to a write is not
covered by the busy timeout) and are retried while another process holds
the lock, so "database is locked" never reaches the caller: after
``busy_timeout`` seconds it becomes :class:`~omniq.errors.BackendUnavailableError`.

Small writes on an idle database (a single enqueue) skip the hop: see
:meth:`Database.write_small`. They run on the caller's thread on a second
connection, under the same in-process lock as the database thread, so the
process still has one writer at a time; that connection never waits for the
write lock (``busy_timeout`` 0) and never checkpoints, and whatever stops it
(another process holding the lock, any error) hands the job to the database
thread instead, which retries as described above.

Durability: WAL with ``synchronous=NORMAL``. A committed transaction survives
a crash of any process; a power loss or OS crash may lose the last
transactions committed before it (never corrupts the file). Pass
``synchronous="FULL"`` to fsync on every commit instead (small writes then
always go through the database thread, so the event loop never waits for an
fsync).

Forking: SQLite keeps process-wide state (its allocator and VFS mutexes, the
per-file lock bookkeeping) that a thread inside the library holds while it
runs. A child forked at that instant would wait on it forever, so a fork
first waits until no thread of ours is inside SQLite (every connection is
used under one of two per-database locks, both taken before the fork) and
the child opens connections of its own (see ``SQLiteComponent._database``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from omniq.errors import BackendError, BackendUnavailableError, ConfigurationError, OmniQError
from omniq_sqlite import schema
from omniq_sqlite._wake import WakeHub

__all__ = ["DEFAULT_FILENAME", "Database", "resolve_path"]

logger = logging.getLogger("omniq.sqlite")

T = TypeVar("T")

#: the database file used when no URL is given: ``<settings.base_dir>/omniq.db``.
DEFAULT_FILENAME = "omniq.db"
_SCHEME = "sqlite://"
#: most write jobs committed together in one transaction (group commit).
_MAX_GROUP = 64
#: "no job" marker for the group-commit loop (None is the stop sentinel).
_NOTHING = object()
_BUSY_CODES = {5, 6, 261, 517}  # SQLITE_BUSY, SQLITE_LOCKED, BUSY_RECOVERY, BUSY_SNAPSHOT
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: WAL pages after which a committing connection checkpoints itself (SQLite's default is 1000).
_BACKSTOP_CHECKPOINT_PAGES = 20_000
#: bytes the WAL file is truncated to after a checkpoint.
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
#: seconds between background checkpoints while writes keep coming.
_CHECKPOINT_PERIOD = 0.2
#: synchronous levels under which a commit does not fsync in WAL mode (so it may run on the caller's thread).
_NO_FSYNC_ON_COMMIT = ("OFF", "NORMAL")
#: seconds a fork waits for the database threads to leave SQLite (a job waiting out another
#: process's write lock may hold it up to busy_timeout); past that it forks anyway, with a warning.
_FORK_WAIT = 10.0
#: returned by Database._try_inline when the job must go to the database thread.
_MISS = object()


def resolve_path(url: str | os.PathLike[str] | None, base_dir: str | os.PathLike[str] | None = None) -> str:
    """Turn ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a plain path into an absolute path.

    ``None`` means ``<base_dir>/omniq.db`` (``base_dir`` defaults to ``.omniq``).
    """
    if url is None:
        path = os.path.join(os.fspath(base_dir) if base_dir is not None else ".omniq", DEFAULT_FILENAME)
    else:
        text = os.fspath(url)
        if "://" in text:
            if not text.startswith(_SCHEME + "/"):
                raise ConfigurationError(
                    f"SQLite URL {text!r} is not valid: expected sqlite:///relative/path.db or sqlite:////abs/path.db"
                )
            text = urllib.parse.unquote(text[len(_SCHEME) + 1 :].split("?", 1)[0])
        path = text
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"SQLite path {path!r} is not valid: the sqlite backend needs a file (use the memory backend for in-memory)"
        )
    return os.path.abspath(os.path.expanduser(path))


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code in _BUSY_CODES
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def translate(exc: sqlite3.Error, path: str) -> OmniQError:
    """Map a sqlite3 exception to an OmniQ error (never the raw "database is locked")."""
    if isinstance(exc, sqlite3.OperationalError):
        return BackendUnavailableError(f"SQLite database {path} is unavailable: {exc}")
    return BackendError(f"SQLite database {path} failed: {type(exc).__name__}: {exc}")


_Job = tuple[Callable[..., Any], tuple[Any, ...], bool, Callable[[Any, BaseException | None], None]]


class Database:
    """A shared, reference-counted connection thread for one database file."""

    _registry: dict[str, Database] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: str, *, busy_timeout: float, synchronous: str, wake: bool) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self.pid = os.getpid()  # a forked child must open its own (see SQLiteComponent._database)
        self.hub = WakeHub(path, cross_process=wake)
        self._refs = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        # Held by the database thread while it runs a job and by a caller running a small write
        # inline (see write_small): one writer per process at a time, never contending in SQLite.
        self._conn_lock = threading.Lock()
        #: the caller-thread connection of write_small (None: every write goes through the thread).
        self._inline: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._serve, name=f"omniq-sqlite:{os.path.basename(path)}", daemon=True)
        self._thread.start()
        self._ready: concurrent.futures.Future[None] | None = None
        # Checkpoints (the only fsyncs under synchronous=NORMAL) run on their own thread and
        # connection, so the database thread never blocks on the disk.
        self._checkpoint_due = threading.Event()
        #: held by the checkpointer thread while it uses its connection (see _before_fork).
        self._checkpoint_lock = threading.Lock()
        self._closing = False
        self._checkpointer: threading.Thread | None = None

    # -- sharing ---------------------------------------------------------------------------------

    @classmethod
    def acquire(
        cls, path: str, *, busy_timeout: float = 30.0, synchronous: str = "NORMAL", wake: bool = True
    ) -> Database:
        """Return this process's database object for ``path`` (creating it), with one more reference."""
        synchronous = synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not valid: expected one of {', '.join(_SYNCHRONOUS)}"
            )
        if busy_timeout <= 0:
            raise ConfigurationError(f"busy_timeout={busy_timeout!r} is not valid: expected seconds > 0")
        with cls._registry_lock:
            db = cls._registry.get(path)
            if db is None:
                db = cls._registry[path] = cls(path, busy_timeout=busy_timeout, synchronous=synchronous, wake=wake)
            db._refs += 1
            return db

    async def release(self) -> None:
        """Drop one reference; the last one closes the connection and stops the thread."""
        with self._registry_lock:
            self._refs -= 1
            if self._refs > 0:
                return
            if self._registry.get(self.path) is self:
                del self._registry[self.path]
        self.hub.close()
        self._closing = True
        self._checkpoint_due.set()
        with contextlib.suppress(OmniQError):
            await self.call(self._close_connection)
        self._jobs.put(None)

    async def open(self) -> None:
        """Open the connection, switch to WAL and migrate the schema (once, shared by all users)."""
        with self._registry_lock:
            ready = self._ready
            if ready is None:
                ready = self._ready = concurrent.futures.Future()
                first = True
            else:
                first = False
        if first:
            try:
                await self.call(self._open_connection)
            except BaseException as exc:
                ready.set_exception(exc)
                with self._registry_lock:
                    self._ready = None
                raise
            ready.set_result(None)
        else:
            await self._await(ready)

    # -- running jobs ----------------------------------------------------------------------------

    def notify(self, kind: str, keys: Iterable[str] | None = None, *, here: bool = False) -> None:
        """Wake local waiters now and hint other processes (call after the commit).

        The datagrams go out from the database thread, or from the calling
        thread when ``here`` is true (a few non-blocking syscalls; used after
        an inline write, so that a sequential producer does not wake the
        database thread for every call).
        """
        key_list = list(keys) if keys is not None else None
        self.hub.notify_local(kind, key_list)
        if self.hub.cross_process:
            if here:
                try:
                    self.hub.send_remote(kind, key_list)
                except OSError as exc:
                    _ignore(None, exc)
            else:
                self._jobs.put((self._broadcast, (kind, key_list), False, _ignore))

    def _broadcast(self, _conn: sqlite3.Connection | None, kind: str, keys: list[str] | None) -> None:
        self.hub.send_remote(kind, keys)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the database thread, outside a transaction."""
        return await self.call(fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` inside ``BEGIN IMMEDIATE ... COMMIT`` on the database thread.

        ``fn`` may run more than once (it is retried while the database is
        locked by another process), so it must only touch the database.
        """
        return await self.call(fn, *args, write=True)

    async def write_small(self, fn: Callable[..., T], *args: Any, notify: str | None = None) -> T:
        """Like :meth:`write`, but run ``fn`` on the calling thread when the database is idle.

        For short jobs only (a handful of rows): an inline run blocks the
        caller's event loop for one small transaction (tens of microseconds,
        no fsync), which is cheaper than the two thread wake-ups of a hop. It
        yields to the event loop first, so a producer loop never starves other
        tasks. When the database thread is busy, another process holds the
        write lock, ``synchronous`` fsyncs on commit or anything fails, the
        job goes through :meth:`write` (retried while busy, errors
        translated); ``fn`` may therefore run more than once.

        ``notify``: a wake-up channel to hint after the commit (see :meth:`notify`).
        """
        result: Any = _MISS
        if self._inline is not None:
            await _checkpoint()
            result = self._try_inline(fn, args)
        if result is _MISS:
            result = await self.write(fn, *args)
        if notify is not None:
            # From here either way: a hint queued behind this job would make the next small write miss.
            self.notify(notify, here=True)
        return result  # type: ignore[no-any-return]

    def _try_inline(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Run a write job on this thread if the database thread is idle; ``_MISS`` when it must go there."""
        if not self._jobs.empty() or not self._conn_lock.acquire(blocking=False):
            return _MISS
        try:
            conn = self._inline
            if conn is None:
                return _MISS
            try:
                conn.execute("BEGIN IMMEDIATE")  # busy_timeout 0: fails at once while another process writes
                result = fn(conn, *args)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    logger.debug("SQLite inline write on %s handed to the database thread: %s", self.path, exc)
                    return _MISS
                raise
        finally:
            self._conn_lock.release()
        if not self._checkpoint_due.is_set():  # set() takes a lock; usually it is set already
            self._checkpoint_due.set()
        return result

    async def call(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        """Submit a job and wait for it; the wait is shielded so a committed result is never dropped."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            future: asyncio.Future[T] = loop.create_future()

            def deliver(result: Any, exc: BaseException | None) -> None:
                with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                    loop.call_soon_threadsafe(_resolve, future, result, exc)

            self._jobs.put((fn, args, write, deliver))
            with anyio.CancelScope(shield=True):
                return await future
        cfuture: concurrent.futures.Future[T] = concurrent.futures.Future()

        def deliver_cf(result: Any, exc: BaseException | None) -> None:
            if exc is not None:
                cfuture.set_exception(exc)
            else:
                cfuture.set_result(result)

        self._jobs.put((fn, args, write, deliver_cf))
        return await self._await(cfuture)

    @staticmethod
    async def _await(future: concurrent.futures.Future[T]) -> T:
        with anyio.CancelScope(shield=True):
            if not future.done():
                await anyio.to_thread.run_sync(future.exception)
        return future.result()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if not job[2] or self._conn is None:
                self._run_one(job)
                continue
            # Group commit: write jobs already queued behind this one (a worker's claim,
            # finish and event batches, concurrent producers) share one transaction.
            group = [job]
            after: Any = _NOTHING
            while len(group) < _MAX_GROUP:
                try:
                    queued = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if queued is None or not queued[2]:
                    after = queued  # a read, a broadcast or the stop sentinel: after the commit
                    break
                group.append(queued)
            if len(group) == 1:
                self._run_one(job)
            else:
                self._run_group(group)
            if after is None:
                return
            if after is not _NOTHING:
                self._run_one(after)

    def _run_one(self, job: Any) -> None:
        fn, args, write, deliver = job
        try:
            if fn == self._broadcast:  # no connection involved
                result = self._execute(fn, args, write)
            else:
                with self._conn_lock:  # released before delivering: the caller's next small write may run inline
                    result = self._execute(fn, args, write)
        except BaseException as exc:
            deliver(None, exc)
        else:
            deliver(result, None)

    def _run_group(self, group: list[Any]) -> None:
        """Run several write jobs in one transaction, each under its own savepoint.

        A job that raises rolls back to its savepoint alone; the others commit.
        Results are delivered only after COMMIT.
        """
        outcomes: list[tuple[Any, BaseException | None]] = []

        def run_all(conn: sqlite3.Connection) -> None:
            outcomes.clear()  # the whole group may be retried while the database is busy
            for fn, args, _write, _deliver in group:
                conn.execute("SAVEPOINT omniq_job")
                try:
                    value = fn(conn, *args)
                except Exception as exc:
                    conn.execute("ROLLBACK TO omniq_job")
                    conn.execute("RELEASE omniq_job")
                    outcomes.append((None, translate(exc, self.path) if isinstance(exc, sqlite3.Error) else exc))
                else:
                    conn.execute("RELEASE omniq_job")
                    outcomes.append((value, None))

        try:
            with self._conn_lock:
                self._execute(run_all, (), True)
        except BaseException as exc:
            for *_, deliver in group:
                deliver(None, exc)
            return
        for (*_, deliver), (value, error) in zip(group, outcomes, strict=True):
            deliver(value, error)

    def _execute(self, fn: Callable[..., Any], args: tuple[Any, ...], write: bool) -> Any:
        conn = self._conn
        if conn is None and fn not in (self._open_connection, self._close_connection, self._broadcast):
            raise BackendError(f"SQLite database {self.path} is not connected; call connect() first")
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                if not write:
                    return fn(conn, *args)
                assert conn is not None
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn, *args)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                if not self._checkpoint_due.is_set():
                    self._checkpoint_due.set()
                return result
            except sqlite3.Error as exc:  # noqa: PERF203 - the loop exists to retry this very error
                if _is_busy(exc) and time.monotonic() < deadline:
                    logger.debug("SQLite database %s is busy; retrying in %.3f s", self.path, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    continue
                if _is_busy(exc):
                    raise BackendUnavailableError(
                        f"SQLite database {self.path} stayed locked by another connection for "
                        f"{self.busy_timeout:g} s (busy_timeout); retry later"
                    ) from exc
                raise translate(exc, self.path) from exc

    # -- connection life cycle (run on the database thread) ------------------------------------

    def _open_connection(self, _conn: None) -> None:
        if self._conn is not None:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("SQLite database %s could not switch to WAL (journal_mode=%s)", self.path, mode)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA cache_size=-16000")
            # The checkpointer thread keeps the WAL short; this is only the backstop if it falls behind.
            conn.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            applied = schema.migrate(conn)
        except BaseException:
            conn.close()
            raise
        if applied:
            logger.info("SQLite database %s migrated to schema version %d", self.path, schema.LATEST_VERSION)
        self._conn = conn
        if str(mode).lower() == "wal" and self.synchronous in _NO_FSYNC_ON_COMMIT:
            self._inline = self._open_inline_connection()
        if self._checkpointer is None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name=f"omniq-sqlite-checkpoint:{os.path.basename(self.path)}", daemon=True
            )
            self._checkpointer.start()

    def _open_inline_connection(self) -> sqlite3.Connection | None:
        """The connection of write_small: never waits for the write lock, never checkpoints."""
        try:
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False, cached_statements=64
            )
        except sqlite3.Error as exc:
            logger.debug("SQLite database %s: no inline connection (%s)", self.path, exc)
            return None
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA temp_store=MEMORY")
            # Checkpoints belong to the checkpointer thread (and the database thread's backstop),
            # never to a caller's event loop.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        except sqlite3.Error as exc:
            logger.debug("SQLite database %s: no inline connection (%s)", self.path, exc)
            conn.close()
            return None
        return conn

    def _checkpoint_loop(self) -> None:
        try:
            with self._checkpoint_lock:
                conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as exc:
            logger.warning(
                "SQLite checkpointer for %s cannot connect (%s); relying on auto-checkpoints", self.path, exc
            )
            # The inline connection does not checkpoint: send every write through the database thread.
            with self._conn_lock:
                inline, self._inline = self._inline, None
            if inline is not None:
                inline.close()
            return
        try:
            while True:
                self._checkpoint_due.wait()
                if self._closing:
                    return
                self._checkpoint_due.clear()
                with self._checkpoint_lock:
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    except sqlite3.Error as exc:
                        logger.debug("SQLite checkpoint of %s skipped: %s", self.path, exc)
                time.sleep(_CHECKPOINT_PERIOD)  # let writes accumulate: one fsync covers many commits
        finally:
            with self._checkpoint_lock:
                conn.close()

    def _close_connection(self, _conn: sqlite3.Connection | None) -> None:
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


async def _checkpoint() -> None:
    """Yield to the event loop once (asyncio directly: anyio's backend lookup costs more than the yield)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        await anyio.lowlevel.checkpoint()
    else:
        await asyncio.sleep(0)


def _resolve(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _ignore(result: Any, exc: BaseException | None) -> None:
    if exc is not None:
        logger.debug("SQLite wake-up hint failed: %s", exc)


#: the locks _before_fork took, released again in the parent after the fork.
_held_over_fork: list[threading.Lock] = []


def _before_fork() -> None:
    """Wait until no thread of ours is inside SQLite, and keep it so until the fork is done."""
    Database._registry_lock.acquire()
    for db in list(Database._registry.values()):
        for lock in (db._conn_lock, db._checkpoint_lock):
            if lock.acquire(timeout=_FORK_WAIT):
                _held_over_fork.append(lock)
            else:
                logger.warning(
                    "forking while SQLite database %s stays in use by another thread (over %g s); "
                    "the child may hang if it opens SQLite",
                    db.path,
                    _FORK_WAIT,
                )


def _after_fork_in_parent() -> None:
    while _held_over_fork:
        _held_over_fork.pop().release()
    Database._registry_lock.release()


def _after_fork_in_child() -> None:
    # The database threads do not exist in a forked child: start from scratch there. The old
    # Database objects (and their held locks) stay behind unused: components see the pid change.
    _held_over_fork.clear()
    Database._registry = {}
    Database._registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
