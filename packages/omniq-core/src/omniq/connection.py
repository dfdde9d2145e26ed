"""One engine connection, owned by a backend component: the helper every backend uses.

A component (task queue, result storage, event storage) holds one
:class:`Connection` to its engine. The helper does what every backend used to
write for itself, each a little differently:

* **open once**: :meth:`Connection.connect` is idempotent and safe under
  concurrent callers (one lock), and a failed open leaves nothing behind;
* **share per process** (optional): components built with the same ``share``
  key (say, the three SQLite components on one file) use one client, opened by
  the first and closed by the last;
* **fork safety**: a forked child (a process-pool task that enqueues through
  components it inherited) never uses nor closes the parent's client, whose
  sockets and event-loop registrations belong to the parent; its next
  :meth:`Connection.client` opens one of its own;
* **errors at the boundary**: :meth:`Connection.errors` translates the driver's
  exceptions into OmniQ's (:func:`map_exceptions`), with the URL's password
  redacted.

What stays in the backend is what only its engine knows: how to open a client
(``open``), how to close one (``close``), and which driver errors mean the
engine is unreachable (``errors``). A backend names its module holding those
``connection.py``. Usage::

    self._connection = Connection(
        url, open=partial(open_client, url), close=close_client, errors=ERRORS
    )
    ...
    async def enqueue(self, task):
        client = await self._connection.client()
        with self._connection.errors():
            await client.call(...)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from typing import Generic, TypeVar

import anyio

from omniq.errors import BackendError, BackendUnavailableError, OmniQError, redact_url

__all__ = ["CONNECTION_ERRORS", "Connection", "fork_generation", "map_exceptions"]

C = TypeVar("C")

#: the exception map most backends start from (their driver's classes come first).
CONNECTION_ERRORS: Mapping[type[BaseException], type[OmniQError]] = {
    ConnectionError: BackendUnavailableError,
    OSError: BackendUnavailableError,
}


@contextlib.contextmanager
def map_exceptions(
    mapping: Mapping[type[BaseException], type[OmniQError]], *, url: str | None = None
) -> Iterator[None]:
    """Translate driver exceptions into OmniQ errors at a backend's boundary.

    The first entry of ``mapping`` that the exception is an instance of wins,
    so specific classes come before their bases. OmniQ's own errors pass
    through; anything unmapped is re-raised unchanged. The message is redacted
    so URLs never leak passwords.

    Usage::

        with map_exceptions({redis.ConnectionError: BackendUnavailableError}, url=self.url):
            await self._redis.ping()
    """
    try:
        yield
    except OmniQError:
        raise
    except Exception as exc:
        for source, target in mapping.items():
            if isinstance(exc, source):
                where = f" ({redact_url(url)})" if url else ""
                raise target(f"{type(exc).__name__}{where}: {redact_url(str(exc))}") from exc
        raise


# -- fork generation ------------------------------------------------------------------------------

_generation = 0


def fork_generation() -> int:
    """A number that changes in a forked child: a client opened under another one is the parent's."""
    return _generation


def _after_fork_in_child() -> None:
    global _generation  # one counter for the whole process, by design
    _generation += 1
    _shared.clear()  # the parent's shared clients are not the child's
    _opening.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Shared(Generic[C]):
    """A client shared by the components of one process that name the same key."""

    __slots__ = ("client", "close", "generation", "users")

    def __init__(self, client: C, close: Callable[[C], Awaitable[None]] | None) -> None:
        self.client = client
        self.close = close
        self.users = 0
        self.generation = _generation


#: key -> the client the components of this process share.
_shared: dict[Hashable, _Shared[object]] = {}
#: key -> the lock under which the first component of this process opens the shared client.
_opening: dict[Hashable, anyio.Lock] = {}


class Connection(Generic[C]):
    """A component's connection to its engine: opened once, shared if asked, closed once.

    Args:
        url: the engine's URL, shown (redacted) in error messages.
        open: coroutine function that opens and checks a client (ping the
            server, migrate the schema, load scripts). Called inside
            :meth:`errors`, so driver errors it raises are translated.
        close: coroutine function that closes a client opened by ``open``;
            never called on a client a forked child inherited.
        errors: driver exception -> OmniQ error, for :meth:`errors`. Put the
            driver's specific classes first; :data:`CONNECTION_ERRORS` is the
            usual tail.
        share: a key (``("sqlite", path)``): components of one process with the
            same key use one client, opened by the first ``connect`` and closed
            by the last ``close``. None (the default) gives this component a
            client of its own.
    """

    __slots__ = ("_close", "_client", "_errors", "_generation", "_lock", "_open", "_share", "url")

    def __init__(
        self,
        url: str | None,
        *,
        open: Callable[[], Awaitable[C]],
        close: Callable[[C], Awaitable[None]] | None = None,
        errors: Mapping[type[BaseException], type[OmniQError]] = CONNECTION_ERRORS,
        share: Hashable | None = None,
    ) -> None:
        self.url = url
        self._open = open
        self._close = close
        self._errors = errors
        self._share = share
        self._client: C | None = None
        self._generation = _generation
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<Connection {redact_url(self.url or '')!r} {state}>"

    @property
    def connected(self) -> bool:
        """Whether this process holds an open client."""
        return self._client is not None and self._generation == _generation

    @property
    def current(self) -> C:
        """The open client, without awaiting (for hot paths after :meth:`connect`).

        Raises:
            BackendError: not connected in this process (call :meth:`client`
                where a forked child may arrive).
        """
        client = self._client
        if client is None or self._generation != _generation:
            raise BackendError("the component is not connected: call connect() first")
        return client

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """Translate driver errors raised inside the block (see :func:`map_exceptions`)."""
        return map_exceptions(self._errors, url=self.url)

    async def client(self) -> C:
        """The open client of this process, opening one first if needed (first use, forked child)."""
        client = self._client
        if client is not None and self._generation == _generation:
            return client
        return await self.connect()

    async def connect(self) -> C:
        """Open the client (or join the shared one); idempotent and safe under concurrent callers."""
        if self._generation != _generation:
            self._forget()
        async with self._lock:
            client = self._client
            if client is not None:
                return client
            if self._share is None:
                client = await self._opened()
            else:
                client = await self._join()
            self._client = client
            self._generation = _generation
            return client

    async def close(self) -> None:
        """Close the client (or leave the shared one); safe to call twice and after a fork."""
        async with self._lock:
            client, self._client = self._client, None
            if client is None or self._generation != _generation:
                return  # never opened, or the parent's: not ours to close
            if self._share is None:
                if self._close is not None:
                    await self._close(client)
                return
            entry = _shared.get(self._share)
            if entry is None or entry.client is not client:
                return
            entry.users -= 1
            if entry.users <= 0:
                del _shared[self._share]
                if entry.close is not None:
                    await entry.close(client)

    def _forget(self) -> None:
        """Drop a client inherited across a fork without closing it, and the parent's lock."""
        self._client = None
        self._generation = _generation
        self._lock = anyio.Lock()

    async def _opened(self) -> C:
        with self.errors():
            return await self._open()

    async def _join(self) -> C:
        key = self._share
        lock = _opening.setdefault(key, anyio.Lock())
        async with lock:  # components connecting at once: the first opens, the others wait and join
            entry = _shared.get(key)
            if entry is None:
                client = await self._opened()
                entry = _shared[key] = _Shared(client, self._close)  # type: ignore[arg-type]  # one C per key
            entry.users += 1
            return entry.client  # type: ignore[return-value]

    async def discard(self) -> None:
        """Drop a client found dead (a lost socket) so that the next :meth:`client` opens a new one.

        Closes it first, ignoring errors (it is dead). Meant for a client of
        this component's own; on a shared one it only leaves it, as
        :meth:`close` does, since the other components still hold it.
        """
        if self._share is not None:
            await self.close()
            return
        async with self._lock:
            client, self._client = self._client, None
            if client is None or self._generation != _generation or self._close is None:
                return
            with contextlib.suppress(Exception):
                await self._close(client)
