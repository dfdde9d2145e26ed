"""The writers' turn: one file lock that the processes writing one database take in turn.

SQLite's own write lock has no queue: a connection that finds it taken gets
SQLITE_BUSY and must sleep and try again (:func:`omniq_sqlite.driver.retry_while_busy`:
1 ms, doubling up to 50 ms). Two worker processes on one file spend much of a
drain asleep that way: one draining 20,000 no-op tasks under a concurrency
limit slept 1.33 s of a 1.5 s drain, while the other held every slot and
waited behind its futile claims. Taken before ``BEGIN IMMEDIATE``, this lock
(``flock`` on ``<database>-writers`` beside the file) makes a waiting writer
sleep in the kernel and run the moment the holder commits, so the busy sleep
is left for connections that are not ours (the ``sqlite3`` shell, another
program).

It is held only around one transaction attempt, by the thread that runs it,
and released before any busy sleep; a process that dies releases it with its
file descriptions. Where ``flock`` does not exist (Windows) or the file cannot
be opened, writers fall back to the busy sleep alone.
"""

from __future__ import annotations

import contextlib
import logging
import os

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["WritersLock"]

logger = logging.getLogger("omniq.sqlite")

#: what follows the database's path in the lock file's name.
SUFFIX = "-writers"


class WritersLock:
    """``flock`` on the database's ``-writers`` file, taken by this process's writer around a transaction."""

    def __init__(self, path: str) -> None:
        self._fd: int | None = None
        if fcntl is None:
            return
        try:
            self._fd = os.open(path + SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            logger.debug("SQLite writers' lock for %s unavailable (%s); writers wait by sleeping", path, exc)

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock (waiting for the holder unless ``blocking`` is false); whether it is held."""
        if self._fd is None:
            return True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:  # an unexpected failure: go on without it (the busy sleep still guards)
            logger.debug("SQLite writers' lock failed (%s)", exc)
        return True

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
