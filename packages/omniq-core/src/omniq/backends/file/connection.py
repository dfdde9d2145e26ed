"""The file backend's engine helper: URLs, errors, and the root a component holds.

The file engine's "connection" is an opened root: a :class:`~.store.Store`
(a local directory, or any fsspec file system) whose folders exist. Building
the store only resolves the URL (no I/O), so a bad URL fails when the
component is built; :func:`open_root` creates the folders on first use,
through :class:`omniq.connection.Connection` like every backend's client.
Every operation then runs as one batch in a worker thread
(:meth:`FileRoot.run`), with ``OSError`` translated at the boundary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar
from urllib.parse import unquote, urlsplit

import anyio.to_thread
from typing_extensions import TypeVarTuple, Unpack

from omniq.backends.file.fsspec_store import FsspecStore
from omniq.backends.file.store import LocalStore, Store
from omniq.backends.file.wakeups import Notifier
from omniq.connection import CONNECTION_ERRORS, Connection
from omniq.constants import DEFAULT_BASE_DIR
from omniq.errors import ConfigurationError, redact_url

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable


__all__ = [
    "DEFAULT_SUBDIR",
    "ERRORS",
    "FileRoot",
    "RootOptions",
    "SETTINGS_OPTIONS",
    "is_local_url",
    "open_root",
    "open_store",
]

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")

#: folder under ``base_dir`` (``settings.base_dir``) used when no URL is given.
DEFAULT_SUBDIR = "files"
#: constructor option -> the setting it defaults to (``Component.settings_options``).
SETTINGS_OPTIONS: Mapping[str, str] = MappingProxyType({"base_dir": "base_dir"})
#: file system errors -> OmniQ errors (a full disk, a vanished mount: the engine is unavailable).
ERRORS = CONNECTION_ERRORS

_LOCAL_SCHEMES = {"", "file", "local"}


def is_local_url(url: str) -> bool:
    """Whether ``url`` names a local directory (a plain path, ``file://`` or ``local://``)."""
    if os.path.isabs(url) or "://" not in url:
        return True
    return urlsplit(url).scheme.lower() in _LOCAL_SCHEMES


def open_store(url: str, *, fsync: bool = True, storage_options: Mapping[str, Any] | None = None) -> Store:
    """Build the store for ``url`` (no I/O): :class:`LocalStore` for paths, :class:`FsspecStore` otherwise.

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


async def open_root(store: Store) -> Store:
    """Create the root's folders (idempotent) and return the store."""
    await anyio.to_thread.run_sync(store.create_layout)
    return store


class RootOptions(TypedDict, total=False):
    """The options of every file component besides its URL (see :class:`FileRoot`)."""

    base_dir: str | os.PathLike[str]
    fsync: bool
    poll_interval: float
    storage_options: Mapping[str, Any] | None


class FileRoot:
    """What a file component holds of its root: the store, its connection, and in-process wake-ups.

    Args:
        url: a directory (path, ``file://``) or any fsspec URL; None means
            ``<base_dir>/files``.
        base_dir: the folder of the default root (``settings.base_dir``).
        fsync: fsync files and folders so an accepted write survives power
            loss (local directories only).
        poll_interval: seconds between checks for work or results written by
            other processes.
        storage_options: extra arguments for the fsspec file system.

    Raises:
        ConfigurationError: a bad URL or ``poll_interval``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        base_dir: str | os.PathLike[str] = DEFAULT_BASE_DIR,
        fsync: bool = True,
        poll_interval: float = 0.2,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ConfigurationError(f"poll_interval={poll_interval!r} is not valid: expected seconds > 0")
        self.url = url if url is not None else os.path.join(os.fspath(base_dir), DEFAULT_SUBDIR)
        self.fsync = fsync
        self.poll_interval = float(poll_interval)
        self.storage_options = dict(storage_options or {})
        self.store = open_store(self.url, fsync=fsync, storage_options=self.storage_options)
        self.notifier = Notifier.for_store(self.store)
        # Nothing to close: every operation opens and closes its own files.
        self.connection: Connection[Store] = Connection(self.url, open=partial(open_root, self.store), errors=ERRORS)

    def __repr__(self) -> str:
        return f"FileRoot({redact_url(self.url)!r})"

    @property
    def multi_process(self) -> bool:
        """Whether several processes may share this root (a local directory with flock)."""
        return self.store.multi_process

    def same_root(self, other: FileRoot) -> bool:
        """Whether ``other`` is the same root in this process (so one lock covers both)."""
        return other.store.key == self.store.key

    async def run(self, func: Callable[[Unpack[_Args]], _T], *args: Unpack[_Args]) -> _T:
        """Run one batch operation in a worker thread (the folders created first), translating OS errors."""
        store = await self.connection.client()

        def call() -> _T:
            with store.session():
                return func(*args)

        with self.connection.errors():
            return await anyio.to_thread.run_sync(call)

    def run_blocking(self, func: Callable[[Unpack[_Args]], _T], *args: Unpack[_Args]) -> _T:
        """:meth:`run` in the calling thread, one with no event loop (the component is connected)."""
        store = self.connection.current
        with self.connection.errors(), store.session():
            return func(*args)

    def notify(self, *channels: str) -> None:
        """Wake this thread's waiters on ``channels``."""
        if channels:
            self.notifier.notify(channels)

    def watch(self, channel: str) -> contextlib.AbstractContextManager[anyio.Event]:
        """An event set when a writer of this thread notifies ``channel`` (see :class:`Notifier`)."""
        return self.notifier.watch(channel)
