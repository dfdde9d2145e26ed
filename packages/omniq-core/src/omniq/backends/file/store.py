"""The storage driver interface of the file backend, and the local-directory driver.

:class:`Store` is a small synchronous interface over paths relative to a
root. :class:`LocalStore` gives the guarantees the queue relies on for
several processes: every write goes to a temp file, is fsynced (unless the
caller says the file is an index it may lose: ``durable=False``) and renamed
into place (a crash never leaves a half-written file visible), a rename is
atomic and fails when the source is gone (so two claimers cannot both take a
task), and ``flock`` stripes serialise read-modify-write of one task. The
driver for any other fsspec URL is :mod:`omniq.backends.file.fsspec_store`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from omniq.backends.file.layout import ALL_DIRS, LOCKS_DIR, TMP_DIR

if TYPE_CHECKING:
    from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, one process only
    fcntl = None  # type: ignore[assignment]

__all__ = ["LocalStore", "Store"]


class Store(ABC):
    """Synchronous file operations over paths relative to one root."""

    #: whether several processes on this host may share the root safely.
    multi_process: bool = False

    def __init__(self, key: str) -> None:
        self.key = key  # identity of the root inside this process (wake-ups, in-process locks)
        self._dirty = threading.local()

    @abstractmethod
    def makedirs(self, rel: str) -> None:
        """Create a folder and its parents (no error when it exists)."""

    @abstractmethod
    def listdir(self, rel: str) -> list[str]:
        """Names in a folder; empty when the folder does not exist."""

    @abstractmethod
    def read(self, rel: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""

    @abstractmethod
    def write(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        """Create or replace a file atomically (temp file + fsync + rename on a local disk).

        ``durable=False`` skips the fsync: a crashed process still never leaves a half-written
        file, but a power loss may lose the write. Only for an index whose loss is safe.
        """

    @abstractmethod
    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create a file only if it does not exist; True when created."""

    def append(self, rel: str, data: bytes) -> None:
        """Add ``data`` at the end of a file, creating it (callers hold the file's lock).

        The default rewrites the whole file, atomically; :class:`LocalStore`
        appends in place, so a record that grows by one line per call costs
        one line per call, not its whole size.
        """
        self.write(rel, (self.read(rel) or b"") + data)

    @abstractmethod
    def rename(self, src: str, dst: str) -> bool:
        """Move a file (replacing ``dst``); False when ``src`` no longer exists."""

    @abstractmethod
    def unlink(self, rel: str) -> bool:
        """Delete a file; False when it did not exist."""

    @abstractmethod
    def exists(self, rel: str) -> bool:
        """Whether the file exists."""

    @abstractmethod
    def age(self, rel: str) -> float | None:
        """Seconds since the file was last modified, or None when it is gone."""

    @abstractmethod
    def lock(self, name: str, *, blocking: bool = True) -> contextlib.AbstractContextManager[bool]:
        """Hold the named lock; the context value is False when ``blocking=False`` and it is busy."""

    def flush(self) -> None:
        """Make the renames done by this thread since the last flush durable (fsync their folders)."""
        self._dirty.dirs = set()

    def session(self) -> contextlib.AbstractContextManager[object]:
        """Held around each batch operation; serialises them where the engine cannot (fsspec)."""
        return contextlib.nullcontext()

    def create_layout(self) -> None:
        """Create every folder the backend uses."""
        for rel in ALL_DIRS:
            self.makedirs(rel)


class LocalStore(Store):
    """A directory on a local file system; safe for several processes on this host.

    Args:
        root: absolute or relative path of the directory.
        fsync: fsync every file before renaming it into place, and the
            folders after a batch; turning it off trades durability across
            power loss for speed (a crashed *process* still never leaves a
            half-written file).
    """

    multi_process = fcntl is not None

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self.root = os.path.abspath(root)
        super().__init__(f"local:{self.root}")
        self.fsync = fsync
        self._thread_locks: dict[str, threading.Lock] = {}
        self._thread_locks_guard = threading.Lock()

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def _touch(self, *dirs: str) -> None:
        if not self.fsync:
            return
        dirty: set[str] | None = getattr(self._dirty, "dirs", None)
        if dirty is None:
            dirty = self._dirty.dirs = set()
        dirty.update(dirs)

    def makedirs(self, rel: str) -> None:
        """Create a folder and its parents."""
        os.makedirs(self._path(rel), exist_ok=True)

    def listdir(self, rel: str) -> list[str]:
        """Names in a folder; empty when it does not exist."""
        try:
            return os.listdir(self._path(rel))
        except FileNotFoundError:
            return []

    def read(self, rel: str) -> bytes | None:
        """The file's bytes, or None."""
        try:
            with open(self._path(rel), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        """Write a temp file in ``tmp/``, fsync it (unless not ``durable``), rename it over ``rel``."""
        tmp = os.path.join(self.root, TMP_DIR, f"{uuid.uuid4().hex}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            self.makedirs(TMP_DIR)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if self.fsync and durable:
                    os.fsync(handle.fileno())
            self._replace(tmp, rel)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _replace(self, src_path: str, rel: str) -> None:
        dst = self._path(rel)
        try:
            os.replace(src_path, dst)
        except FileNotFoundError:
            if not os.path.exists(src_path):
                raise
            os.makedirs(os.path.dirname(dst), exist_ok=True)  # a queue's first task creates its folder
            os.replace(src_path, dst)
        self._touch(os.path.dirname(dst))

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """O_CREAT|O_EXCL create; False when the file exists."""
        try:
            fd = os.open(self._path(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        self._touch(os.path.dirname(self._path(rel)))
        return True

    def append(self, rel: str, data: bytes) -> None:
        """``O_APPEND`` write, fsynced; a crash (power loss) can leave the last line torn, so readers check lines."""
        path = self._path(rel)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o644)
        with os.fdopen(fd, "ab") as handle:
            handle.write(data)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        self._touch(os.path.dirname(path))  # a file created here needs its folder entry made durable

    def rename(self, src: str, dst: str) -> bool:
        """Atomic rename; False when ``src`` is gone (another process moved it first)."""
        src_path = self._path(src)
        try:
            self._replace(src_path, dst)
        except FileNotFoundError:
            if os.path.exists(src_path):
                raise
            return False
        self._touch(os.path.dirname(src_path))
        return True

    def unlink(self, rel: str) -> bool:
        """Delete a file; False when it did not exist."""
        path = self._path(rel)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        self._touch(os.path.dirname(path))
        return True

    def exists(self, rel: str) -> bool:
        """Whether the file exists."""
        return os.path.exists(self._path(rel))

    def age(self, rel: str) -> float | None:
        """Seconds since the last modification, or None."""
        try:
            return time.time() - os.stat(self._path(rel)).st_mtime
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def lock(self, name: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold ``locks/<name>.lock`` with flock (released by the kernel if the process dies)."""
        if fcntl is None:  # pragma: no cover - Windows
            with self._thread_lock(name, blocking=blocking) as acquired:
                yield acquired
            return
        # A fresh open per acquisition: flock excludes per open file description, so this
        # also excludes other threads of this process (a cached descriptor would not).
        path = os.path.join(self.root, LOCKS_DIR, f"{name}.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            self.makedirs(LOCKS_DIR)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                acquired = True
            except BlockingIOError:
                acquired = False
            try:
                yield acquired
            finally:
                if acquired:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _thread_lock(self, name: str, *, blocking: bool) -> Iterator[bool]:  # pragma: no cover - Windows
        with self._thread_locks_guard:
            lock = self._thread_locks.setdefault(name, threading.Lock())
        acquired = lock.acquire(blocking)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()

    def flush(self) -> None:
        """Fsync (make durable) every folder this thread renamed into or out of since the last flush."""
        dirty: set[str] | None = getattr(self._dirty, "dirs", None)
        self._dirty.dirs = set()
        for folder in dirty or ():
            try:
                fd = os.open(folder, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
