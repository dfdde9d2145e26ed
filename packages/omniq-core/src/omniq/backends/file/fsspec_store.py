"""The file backend's driver for any fsspec URL (``memory://``, ``s3://``, ...): one consumer process only."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from omniq.backends.file.store import Store

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["FsspecStore"]

_FSSPEC_LOCKS: dict[str, threading.RLock] = {}
_FSSPEC_LOCKS_GUARD = threading.Lock()


class FsspecStore(Store):
    """Any fsspec file system (``memory://``, ``s3://``, ...): one consumer process only.

    Object stores have no atomic rename (``mv`` is copy + delete) and no
    locks, so this store serialises every operation on a root behind one
    re-entrant lock shared by all instances in this process. Several
    processes sharing such a root may run a task twice or lose updates.
    Writes are a single ``pipe_file`` (an object PUT is atomic; other fsspec
    file systems may expose a partial file after a crash).
    """

    multi_process = False

    def __init__(self, fs: Any, root: str) -> None:
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.fs = fs
        self.root = root.rstrip("/")
        super().__init__(f"{protocol}:{self.root}")
        with _FSSPEC_LOCKS_GUARD:
            self._lock = _FSSPEC_LOCKS.setdefault(self.key, threading.RLock())

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def makedirs(self, rel: str) -> None:
        """Create a folder (a no-op on object stores)."""
        self.fs.makedirs(self._path(rel), exist_ok=True)

    def listdir(self, rel: str) -> list[str]:
        """Names in a folder; empty when it does not exist."""
        try:
            entries: Iterable[str] = self.fs.ls(self._path(rel), detail=False)
        except FileNotFoundError:
            return []
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries]

    def read(self, rel: str) -> bytes | None:
        """The file's bytes, or None."""
        try:
            data: bytes = self.fs.cat_file(self._path(rel))
        except FileNotFoundError:
            return None
        return data

    def write(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        """One ``pipe_file`` call (``durable`` is the remote store's business)."""
        self.fs.pipe_file(self._path(rel), data)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create unless it exists (atomic only thanks to the in-process lock)."""
        with self._lock:
            if self.fs.exists(self._path(rel)):
                return False
            self.fs.pipe_file(self._path(rel), data)
            return True

    def rename(self, src: str, dst: str) -> bool:
        """``mv`` (copy + delete on object stores); False when ``src`` is gone."""
        try:
            self.fs.mv(self._path(src), self._path(dst))
        except FileNotFoundError:
            return False
        return True

    def unlink(self, rel: str) -> bool:
        """Delete a file; False when it did not exist."""
        try:
            self.fs.rm_file(self._path(rel))
        except FileNotFoundError:
            return False
        return True

    def exists(self, rel: str) -> bool:
        """Whether the file exists."""
        return bool(self.fs.exists(self._path(rel)))

    def age(self, rel: str) -> float | None:
        """Seconds since modification when the file system reports it, else 0."""
        try:
            modified = self.fs.modified(self._path(rel))
        except FileNotFoundError:
            return None
        except (NotImplementedError, OSError):
            return 0.0
        return time.time() - float(modified.timestamp())

    def session(self) -> contextlib.AbstractContextManager[object]:
        """The root's in-process lock: one batch operation at a time."""
        return self._lock

    @contextlib.contextmanager
    def lock(self, name: str, *, blocking: bool = True) -> Iterator[bool]:
        """Every lock is the root's single in-process lock (re-entrant, so nesting is fine)."""
        acquired = self._lock.acquire(blocking)
        try:
            yield acquired
        finally:
            if acquired:
                self._lock.release()
