"""What the three SQLite components share: URL handling, settings and the connection life cycle."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar

import anyio

from omniq_sqlite._db import Database, resolve_path

__all__ = ["SQLiteComponent", "chunks", "from_ts", "to_ts"]

_UTC = timezone.utc
#: SQLite accepts 32766 host parameters since 3.32; stay well below for IN lists.
CHUNK = 500


def to_ts(value: datetime | None) -> float | None:
    """Datetime -> epoch seconds (REAL column)."""
    return None if value is None else value.timestamp()


def from_ts(value: float | None) -> datetime | None:
    """Epoch seconds -> aware UTC datetime."""
    return None if value is None else datetime.fromtimestamp(value, _UTC)


def chunks(items: list[Any], size: int = CHUNK) -> list[list[Any]]:
    """Split ``items`` into lists of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


class SQLiteComponent:
    """Mixin: one file, shared per process through :class:`~omniq_sqlite._db.Database`.

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
    """

    backend_name = "sqlite"

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        busy_timeout: float = 30.0,
        synchronous: str = "NORMAL",
        wake: bool = True,
        wait_poll: float = 2.0,
    ) -> None:
        self.path = resolve_path(url, base_dir)
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout = float(busy_timeout)
        self.synchronous = synchronous
        self.wake = wake
        self.wait_poll = float(wait_poll)
        self._db: Database | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    settings_options: ClassVar[Mapping[str, str]] = {"base_dir": "base_dir"}

    async def connect(self) -> None:
        """Open (or join) this process's connection to the file and migrate the schema."""
        async with self._lock:
            if self._db is not None:
                return
            db = Database.acquire(
                self.path, busy_timeout=self.busy_timeout, synchronous=self.synchronous, wake=self.wake
            )
            try:
                await db.open()
            except BaseException:
                await db.release()
                raise
            self._db = db

    async def close(self) -> None:
        """Leave the shared connection; the last component of the process closes it."""
        async with self._lock:
            db, self._db = self._db, None
            if db is not None and db.pid == os.getpid():  # a parent's database is not ours to close
                await db.release()

    async def _database(self) -> Database:
        db = self._db
        if db is not None and db.pid != os.getpid():
            # A forked child (a process-pool task that enqueues): the database thread is not here
            # and SQLite connections must not cross a fork, so open this process's own.
            self._db = db = None
        if db is None:
            await self.connect()
            db = self._db
            assert db is not None
        return db
