"""The SQLite engine helper: URLs, options, opening the file on aiosqlite, the error map, fork safety.

Every component of a process that names the same file shares one
:class:`~omniq_sqlite.database.Database` through
:class:`omniq.connection.Connection` (``share=("sqlite", path)``): one
aiosqlite connection whose thread runs whole jobs (a claim, a finish, an
``executemany`` insert), so writers of one process never contend for SQLite's
write lock with each other, and queued writes of all three components commit
together (see :mod:`omniq_sqlite.database`).

Durability: WAL with ``synchronous=NORMAL``. A committed transaction survives
a crash of any process; a power loss or OS crash may lose the last
transactions committed before it (never corrupts the file). Pass
``synchronous="FULL"`` to fsync on every commit instead.

Forking: SQLite keeps process-wide state (its allocator and VFS mutexes, the
per-file lock bookkeeping) that a thread inside the library holds while it
runs. A child forked at that instant would wait on it forever, so a fork first
waits until no thread of ours is inside SQLite (every use of a connection is
under one of two per-database locks, both taken before the fork). The child
never uses nor closes what it inherited (the ``Connection`` helper opens its
own, and the inherited objects are kept alive so no finaliser closes the
parent's SQLite handles from the child).

"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiosqlite
import anyio

from omniq.connection import CONNECTION_ERRORS, Connection
from omniq.errors import BackendError, BackendUnavailableError, ConfigurationError, OmniQError
from omniq_sqlite import schema
from omniq_sqlite._wake import WakeHub
from omniq_sqlite.database import Database
from omniq_sqlite.driver import raw, retry_while_busy, run

__all__ = [
    "SETTINGS_OPTIONS",
    "DEFAULT_FILENAME",
    "ERRORS",
    "Options",
    "close_database",
    "open_database",
    "resolve_path",
    "sqlite_connection",
]

logger = logging.getLogger("omniq.sqlite")

#: the database file used when no URL is given: ``<settings.base_dir>/omniq.db``.
DEFAULT_FILENAME = "omniq.db"
_SCHEME = "sqlite://"
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: synchronous levels under which a commit does not fsync in WAL mode (so it may run on the caller's thread).
_NO_FSYNC_ON_COMMIT = ("OFF", "NORMAL")
#: WAL pages after which a committing connection checkpoints itself (SQLite's default is 1000).
_BACKSTOP_CHECKPOINT_PAGES = 20_000
#: bytes the WAL file is truncated to after a checkpoint.
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
#: seconds a fork waits for our threads to leave SQLite (a job waiting out another process's
#: write lock may hold it up to busy_timeout); past that it forks anyway, with a warning.
_FORK_WAIT = 10.0

#: sqlite3 errors -> OmniQ errors (opening; jobs translate theirs on the database thread).
ERRORS: dict[type[BaseException], type[OmniQError]] = {
    sqlite3.OperationalError: BackendUnavailableError,
    sqlite3.Error: BackendError,
    **CONNECTION_ERRORS,
}


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


@dataclass(frozen=True)
class Options:
    """A component's options (the same for all three components).

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a plain
            path; None means ``<base_dir>/omniq.db``.
        base_dir: directory of the default file (``settings.base_dir``).
        busy_timeout: seconds to keep retrying while another process holds
            the write lock before raising BackendUnavailableError.
        synchronous: ``NORMAL`` (default; survives process crashes, a power
            loss may drop the last commits) or ``FULL`` (fsync every commit).
        wake: send and receive cross-process wake-up hints (Unix datagrams in
            ``<db>.wake/``); when False other processes are seen by polling.
        wait_poll: longest sleep of a result waiter between checks when no
            hint arrives (hints normally end the wait much sooner).

    The first component of a process to connect to a file opens it with its
    options; the others share that database.
    """

    path: str
    busy_timeout: float
    synchronous: str
    wake: bool
    wait_poll: float

    @classmethod
    def parse(
        cls,
        url: str | os.PathLike[str] | None = None,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        busy_timeout: float = 30.0,
        synchronous: str = "NORMAL",
        wake: bool = True,
        wait_poll: float = 2.0,
    ) -> Options:
        """Validate the options (ConfigurationError on a bad one)."""
        synchronous = synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not valid: expected one of {', '.join(_SYNCHRONOUS)}"
            )
        if busy_timeout <= 0:
            raise ConfigurationError(f"busy_timeout={busy_timeout!r} is not valid: expected seconds > 0")
        path = resolve_path(url, base_dir)
        return cls(path, float(busy_timeout), synchronous, bool(wake), float(wait_poll))

    @property
    def url(self) -> str:
        """The absolute ``sqlite:///`` URL of the file."""
        return f"sqlite:///{self.path}"


#: constructor option -> Settings attribute, for the three components.
SETTINGS_OPTIONS: Mapping[str, str] = MappingProxyType({"base_dir": "base_dir"})


def sqlite_connection(url: str | os.PathLike[str] | None, **options: Any) -> tuple[Options, Connection[Database]]:
    """A component's options and connection: shared by every component of the process on the same file."""
    parsed = Options.parse(url, **options)
    connection = Connection(
        parsed.url,
        open=partial(open_database, parsed),
        close=close_database,
        errors=ERRORS,
        share=("sqlite", parsed.path),
    )
    return parsed, connection


async def _connect(path: str, **kwargs: Any) -> aiosqlite.Connection:
    conn = aiosqlite.connect(path, isolation_level=None, check_same_thread=False, **kwargs)
    # A daemon thread, as sqlite3's own objects: a component left open never keeps the process alive.
    conn._thread.daemon = True
    try:
        return await conn
    except BaseException:
        # A failed open stops aiosqlite's thread without waiting for it; wait here, so that
        # the thread never calls back into an event loop that is closed by then.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(conn._thread.join)
        raise


# -- opening and closing -------------------------------------------------------------------------


def _switch_to_wal(conn: sqlite3.Connection, timeout: float, path: str) -> str:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the lock, up to ``timeout`` s.

    The busy timeout does not cover it: two connections that both read the
    file and both ask for the exclusive lock the switch needs would wait on
    each other, so SQLite fails one of them at once instead of calling its busy
    handler (4 in 100 rounds of four processes opening a new file together).
    """
    return retry_while_busy(lambda: str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]), timeout, path)


def _configure(conn: sqlite3.Connection, options: Options) -> tuple[bool, int]:
    """PRAGMAs and migrations, on the connection's thread; returns (WAL on, migrations applied)."""
    # Waits out other processes here (WAL switch, migrations); jobs retry busy errors themselves.
    conn.execute(f"PRAGMA busy_timeout = {int(options.busy_timeout * 1000)}")
    mode = _switch_to_wal(conn, options.busy_timeout, options.path)
    wal = str(mode).lower() == "wal"
    if not wal:
        logger.warning("SQLite database %s could not switch to WAL (journal_mode=%s)", options.path, mode)
    conn.execute(f"PRAGMA synchronous={options.synchronous}")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-16000")
    # The checkpointer keeps the WAL short; this is only the backstop if it falls behind.
    conn.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_CHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
    applied = schema.migrate(conn)
    # From here the connection never waits inside SQLite: a write that meets another process's
    # lock fails at once and is retried by Database (on its thread), or handed there (inline).
    conn.execute("PRAGMA busy_timeout = 0")
    return wal, applied


async def _open_checkpointer(options: Options) -> aiosqlite.Connection | None:
    try:
        conn = await _connect(options.path, timeout=1.0)
    except sqlite3.Error as exc:
        logger.warning("SQLite checkpointer for %s cannot connect (%s); relying on auto-checkpoints", options.path, exc)
        return None
    try:
        await run(conn, raw(conn).execute, f"PRAGMA synchronous={options.synchronous}")
    except sqlite3.Error as exc:
        logger.warning("SQLite checkpointer for %s cannot connect (%s); relying on auto-checkpoints", options.path, exc)
        await conn.close()
        return None
    return conn


async def open_database(options: Options) -> Database:
    """Open the file (creating its directory), switch to WAL, migrate, start the checkpointer."""
    Path(options.path).parent.mkdir(parents=True, exist_ok=True)
    conn = await _connect(options.path, timeout=0, cached_statements=256)
    try:
        wal, applied = await run(conn, _configure, raw(conn), options)
    except BaseException:
        await conn.close()
        raise
    if applied:
        logger.info("SQLite database %s migrated to schema version %d", options.path, schema.LATEST_VERSION)
    checkpointer = await _open_checkpointer(options)
    # Small writes may run on the caller's thread only when a commit does not fsync and
    # the checkpointer (not the caller) checkpoints.
    inline = wal and options.synchronous in _NO_FSYNC_ON_COMMIT and checkpointer is not None
    db = Database(
        options.path,
        conn,
        checkpointer,
        busy_timeout=options.busy_timeout,
        inline=inline,
        hub=WakeHub(options.path, cross_process=options.wake),
    )
    with _registry_lock:
        _live.add(db)
    return db


async def close_database(db: Database) -> None:
    """Stop the checkpointer, close the connections and the wake-up hub."""
    with _registry_lock:
        _live.discard(db)
    await db.close()


# -- fork safety ---------------------------------------------------------------------------------

_registry_lock = threading.Lock()
#: the open databases of this process (for the fork guard).
_live: weakref.WeakSet[Database] = weakref.WeakSet()
#: the locks _before_fork took, released again in the parent after the fork.
_held_over_fork: list[threading.Lock] = []
#: a forked child's inherited databases: kept alive so no finaliser closes the parent's handles here.
_abandoned: list[Database] = []


def _before_fork() -> None:
    """Wait until no thread of ours is inside SQLite, and keep it so until the fork is done."""
    _registry_lock.acquire()
    for db in list(_live):
        for lock in db.locks:
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
    _registry_lock.release()


def _after_fork_in_child() -> None:
    global _registry_lock  # the parent's (held) lock stays behind
    _held_over_fork.clear()
    _abandoned.extend(_live)
    _live.clear()
    _registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
