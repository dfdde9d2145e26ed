"""The lane: one connection of the components' own, beside redis-py's pool, for sequential calls.

Why it stays (issue 14 asked for 15 % on a hot path against redis-py's own API): measured with
``benchmarks/redis_lane_vs_pipeline.py --rounds 9 --single 4000`` (A/B interleaved in one process, a 2-core box
shared with other work; median [range] over the rounds), the same components with the lane on and
switched off (every call through redis-py's ``evalsha`` / ``execute_command`` / ``pipeline``):

=========================  ======================  =======================  ===========
figure (2026-12-05)        lane                    redis-py                lane better
=========================  ======================  =======================  ===========
AsyncOmniQ.enqueue, wall   75.0 µs [65.7-296.9]    181.4 µs [136.3-373.9]  +142 %
AsyncOmniQ.enqueue, CPU    43.6 µs [40.6-67.0]     111.1 µs [99.6-149.3]   +155 %
drain (burst worker)       8,853/s [5,394-14,418]  7,502/s [4,405-9,874]   +18 %
=========================  ======================  =======================  ===========

Five earlier runs (5-9 rounds, two of them before the lane moved here; wall time only) gave the
enqueue +3 % to +101 % (median of the runs +40 %) and the drain -2 % to +48 % (median +17 %): the
machine's load swings the wall figures, while the client's CPU per enqueue (the Python the lane
saves: pool checkout, stream reader layers, per-read timeouts) fell by 40-73 % in every round.
The drain gains less because a worker's calls overlap: the lane takes one call at a time and the
others go through the pool anyway.

:class:`omniq_redis.connection.RedisClient` sends a call here when the lane is free and through the
pool otherwise (concurrent callers, pub/sub, configurations the lane cannot speak for).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as rexc

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["Lane", "reply_error"]

#: the lane's receive buffer, one per connection.
_READ_BUFFER = 256 * 1024


class _LaneProtocol(asyncio.BufferedProtocol):
    """The lane's socket: replies parsed by hiredis and handed to the waiting futures in order.

    A buffered protocol, so the event loop reads into one buffer allocated per
    connection (``recv_into``). A plain protocol gets a new ``bytes`` from
    ``recv(256 KiB)`` per read; until glibc's mmap threshold has grown past
    that size, each one is an mmap, an mremap and a munmap (seen with strace
    in a small process: three extra syscalls per round trip).
    """

    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=reply_error)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self._buffer = memoryview(bytearray(_READ_BUFFER))
        # the loop it was made in, kept: asyncio.get_running_loop() costs a getpid() syscall per
        # call on Python 3.11
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport: create_connection made it

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.feed(self._buffer, 0, nbytes)  # type: ignore[arg-type]  # hiredis reads any buffer (its stub says bytes); it copies what it keeps
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:
                self._fail(ConnectionError("Redis sent a reply nobody asked for"))
                return
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = ConnectionError(f"Redis closed the connection: {exc}" if exc else "Redis closed the connection")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def _fail(self, error: BaseException) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


def _settle(futures: Sequence[asyncio.Future[Any]]) -> None:
    """After one reply of a pipelined call failed: the others' errors are retrieved, the unanswered cancelled.

    A lost connection fails every waiting future; those not awaited would each be logged by asyncio
    ("Future exception was never retrieved") once collected.
    """
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


def reply_error(message: str) -> rexc.ResponseError:
    """An error reply as redis-py's exception (hiredis builds it; NOSCRIPT is a ``NoScriptError``)."""
    if message.startswith("NOSCRIPT"):
        return rexc.NoScriptError(message)
    return rexc.ResponseError(message)


def _pack(args: Sequence[Any]) -> bytes:
    """RESP-encode one command (bytes, str, int and float arguments)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):  # checked first: a blob needs no conversion
            pass
        elif isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        elif isinstance(arg, float):
            arg = repr(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


class Lane:
    """One connection of its own, outside redis-py, for one command at a time.

    Sequential script calls (a producer's enqueue loop, a worker's claims and
    finishes) are the hot path, and redis-py's pool checkout, stream reader
    layers and per-read timeout cost about as much Python as the round trip
    itself. The lane is an asyncio protocol fed to hiredis: a reply resolves a
    future straight from the event loop's read callback.

    It keeps the pool's safety: a connection the server closed is noticed by
    the loop (connection_lost) and reconnected on the next call; a reply that
    does not come within the socket timeout aborts the connection (one
    watchdog timer per timeout period, not one timer per call); a call
    cancelled or failed between send and reply drops the connection, whose
    late reply can then never be taken for another call's.

    Args:
        kwargs: the redis-py pool's connection keyword arguments (host, port or
            path, db, username, password, client_name, ssl options, timeouts).
        connection_class: the pool's connection class (for the TLS context).
    """

    def __init__(self, kwargs: Mapping[str, Any], connection_class: type[Any]) -> None:
        self._kwargs = dict(kwargs)
        self._timeout: float | None = kwargs.get("socket_timeout")
        self._ssl: Any = None
        if issubclass(connection_class, aioredis.SSLConnection):
            self._ssl = connection_class(**kwargs).ssl_context.get()
        self._protocol: _LaneProtocol | None = None
        self._busy = False
        self._sent_at = 0.0
        self._limit: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    @staticmethod
    def supports(kwargs: Mapping[str, Any]) -> bool:
        """Whether the lane can speak for this configuration (else calls use the pool)."""
        return kwargs.get("credential_provider") is None and kwargs.get("protocol") in (None, 2, "2")

    @property
    def free(self) -> bool:
        """True when no call is in flight (a caller would not wait)."""
        return not self._busy

    async def _connect(self) -> _LaneProtocol:
        """Open the connection and run the handshake, both within the connect timeout."""
        return await asyncio.wait_for(self._open(), self._kwargs.get("socket_connect_timeout"))

    async def _open(self) -> _LaneProtocol:
        loop = asyncio.get_running_loop()
        kw = self._kwargs
        if kw.get("path"):
            _, protocol = await loop.create_unix_connection(_LaneProtocol, kw["path"])
        else:
            host = kw.get("host", "localhost")
            _, protocol = await loop.create_connection(
                _LaneProtocol, host, kw.get("port", 6379), ssl=self._ssl, server_hostname=host if self._ssl else None
            )
        handshake: list[tuple[Any, ...]] = []
        if kw.get("password") is not None:
            user = kw.get("username")
            handshake.append(("AUTH", user, kw["password"]) if user else ("AUTH", kw["password"]))
        if kw.get("db"):
            handshake.append(("SELECT", kw["db"]))
        if kw.get("client_name"):
            handshake.append(("CLIENT", "SETNAME", kw["client_name"]))
        try:
            if handshake:
                futures = self._write(protocol, b"".join(map(_pack, handshake)), len(handshake), None)
                for reply in [await future for future in futures]:
                    if isinstance(reply, rexc.ResponseError):
                        raise reply
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.abort()
            raise
        return protocol

    def _write(
        self, protocol: _LaneProtocol, payload: bytes, count: int, limit: float | None
    ) -> list[asyncio.Future[Any]]:
        """Write ``count`` packed commands at once; the futures of their replies (errors as exception objects)."""
        transport = protocol.transport
        if transport is None:
            raise ConnectionError("Redis closed the connection")
        loop = protocol.loop
        futures = [loop.create_future() for _ in range(count)]
        protocol.waiting.extend(futures)
        transport.write(payload)
        self._limit = limit
        if limit is not None:
            self._sent_at = loop.time()
            if self._watchdog is None:
                self._watchdog = loop.call_later(limit, self._check_timeout)
        return futures

    def _check_timeout(self) -> None:
        self._watchdog = None
        protocol, limit = self._protocol, self._limit
        if not self._busy or protocol is None or not protocol.waiting or limit is None:
            return
        overdue = self._sent_at + limit - asyncio.get_running_loop().time()
        if overdue <= 0:
            protocol._fail(rexc.TimeoutError(f"no reply from Redis within {limit} s"))
        else:
            self._watchdog = asyncio.get_running_loop().call_later(overdue, self._check_timeout)

    def _begin(self) -> _LaneProtocol | None:
        """Mark the lane busy; its live connection, or None when one must be opened first."""
        if self._busy:
            raise RuntimeError("the lane runs one call at a time: check free first")
        self._busy = True
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            self._protocol = None
            return None
        return protocol

    async def call(self, *args: Any) -> Any:
        """Run one command; an error reply raises (as redis-py's ResponseError family).

        The single-command case of :meth:`call_many`, written out: it is every
        sequential script call's path, and each coroutine level costs.
        """
        protocol = self._begin()
        try:
            if protocol is None:
                protocol = self._protocol = await self._connect()
            (future,) = self._write(protocol, _pack(args), 1, self._timeout)
            reply = await future
        except BaseException:
            self.close()  # see call_many
            raise
        finally:
            self._busy = False
        if isinstance(reply, rexc.ResponseError):
            raise reply
        return reply

    async def call_many(self, commands: Sequence[Sequence[Any]], timeout: float | None) -> list[Any]:
        """Run commands pipelined in one write; replies in order, error replies as exception objects.

        ``timeout`` bounds the wait for the replies (``None``: unbounded, for
        blocking commands that bound themselves).
        """
        protocol = self._begin()
        try:
            if protocol is None:
                protocol = self._protocol = await self._connect()
            futures = self._write(protocol, b"".join(map(_pack, commands)), len(commands), timeout)
            try:
                return [await future for future in futures]
            except BaseException:
                _settle(futures)
                raise
        except BaseException:
            # Cancelled or failed between send and reply: a reply may still come, so the
            # connection cannot be reused.
            self.close()
            raise
        finally:
            self._busy = False

    def close(self) -> None:
        """Drop the connection (the next call opens a new one)."""
        protocol, self._protocol = self._protocol, None
        watchdog, self._watchdog = self._watchdog, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        if watchdog is not None:
            watchdog.cancel()
