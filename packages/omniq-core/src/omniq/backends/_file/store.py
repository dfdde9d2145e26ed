"""Storage drivers of the file backend: a local directory, or any fsspec URL.

Both expose the same small synchronous interface over paths relative to the
root. :class:`LocalStore` gives the guarantees the queue relies on for
several processes: every write goes to a temp file, is fsynced and renamed
into place (a crash never leaves a half-written file visible), a rename is
atomic and fails when the source is gone (so two claimers cannot both take a
task), and ``flock`` stripes serialise read-modify-write of one task.
:class:`FsspecStore` has none of that across processes (object stores have
no atomic rename), so it serialises everything behind one lock per root
inside this process: one consumer process only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import anyio

from omniq.backends._file.layout import ALL_DIRS, LOCKS_DIR, TMP_DIR
from omniq.errors import ConfigurationError, redact_url

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, one process only
    fcntl = None  # type: ignore[assignment]

__all__ = ["FsspecStore", "LocalStore", "Notifier", "Store", "is_local_url", "open_store"]

logger = logging.getLogger("omniq.file")

_LOCAL_SCHEMES = {"", "file", "local"}


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
    def write(self, rel: str, data: bytes) -> None:
        """Create or replace a file atomically (temp file + fsync + rename on a local disk)."""

    @abstractmethod
    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create a file only if it does not exist; True when created."""

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

    def write(self, rel: str, data: bytes) -> None:
        """Write a temp file in ``tmp/``, fsync it, rename it over ``rel``."""
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
                if self.fsync:
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
        """fsync every folder this thread renamed into or out of since the last flush."""
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

    def write(self, rel: str, data: bytes) -> None:
        """One ``pipe_file`` call."""
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


def is_local_url(url: str) -> bool:
    """Whether ``url`` names a local directory (a plain path, ``file://`` or ``local://``)."""
    if os.path.isabs(url) or "://" not in url:
        return True
    return urlsplit(url).scheme.lower() in _LOCAL_SCHEMES


def open_store(url: str, *, fsync: bool = True, storage_options: Mapping[str, Any] | None = None) -> Store:
    """Build the store for ``url``: :class:`LocalStore` for paths, :class:`FsspecStore` otherwise.

    Raises:
        ConfigurationError: the URL is empty, or fsspec is needed but missing,
            or fsspec does not know the protocol.
    """
    if not url.strip():
        raise ConfigurationError("the file backend needs a directory or an fsspec URL, got an empty string")
    if is_local_url(url):
        path = unquote(urlsplit(url).path) if "://" in url else url
        return LocalStore(os.path.expanduser(path), fsync=fsync)
    try:
        import fsspec  # ships no type information: pyproject.toml's mypy section skips it
    except ImportError as exc:
        raise ConfigurationError(
            f"the file backend needs fsspec for {redact_url(url)!r}: "
            "from a clone of OmniQ, pip install './packages/omniq-core[file]'"
        ) from exc
    try:
        fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except (ValueError, ImportError) as exc:
        raise ConfigurationError(f"fsspec cannot open {redact_url(url)!r}: {redact_url(str(exc))}") from exc
    return FsspecStore(fs, root)


class Notifier:
    """In-process wake-ups on one root: ``wait_for_work`` and result waiters.

    A waiter is woken only from its own thread (its event loop); waiters on
    other threads and in other processes fall back to polling.
    """

    # Weak: the notifier of a root lives as long as some component on that root does.
    _by_key: weakref.WeakValueDictionary[str, Notifier] = weakref.WeakValueDictionary()
    _guard = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[anyio.Event, int]]] = {}

    @classmethod
    def for_store(cls, store: Store) -> Notifier:
        """The notifier shared by every component on ``store``'s root."""
        with cls._guard:
            notifier = cls._by_key.get(store.key)
            if notifier is None:
                notifier = cls._by_key[store.key] = cls()
            return notifier

    @contextlib.contextmanager
    def watch(self, channel: str) -> Iterator[anyio.Event]:
        """Register an event set by :meth:`notify` on ``channel`` (from this thread)."""
        entry = (anyio.Event(), threading.get_ident())
        with self._lock:
            self._waiters.setdefault(channel, set()).add(entry)
        try:
            yield entry[0]
        finally:
            with self._lock:
                waiters = self._waiters.get(channel)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._waiters[channel]

    def notify(self, channels: Iterable[str]) -> None:
        """Wake this thread's waiters on ``channels``."""
        me = threading.get_ident()
        with self._lock:
            woken = [event for channel in channels for event, ident in self._waiters.get(channel, ()) if ident == me]
        for event in woken:
            event.set()
