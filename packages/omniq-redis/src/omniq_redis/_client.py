"""Connection handling shared by the three Redis components.

Builds the ``redis.asyncio`` client (lazily, in ``connect``), translates
driver errors into OmniQ errors, runs the Lua scripts by SHA with a reload
on NOSCRIPT, and converts datetimes to the integer microseconds the scripts
store.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from omniq.base import map_exceptions
from omniq.errors import BackendError, BackendUnavailableError, ConfigurationError, OmniQError, redact_url
from omniq_redis.scripts import SCRIPTS

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

__all__ = ["DEFAULT_URL", "RedisClient", "from_us", "to_ms", "to_us"]

logger = logging.getLogger("omniq.redis")

#: URL used when none is configured.
DEFAULT_URL = "redis://127.0.0.1:6379/0"

# Order matters: the first matching class wins, so connection problems come before RedisError.
_ERRORS: dict[type[BaseException], type[OmniQError]] = {
    rexc.ConnectionError: BackendUnavailableError,
    rexc.TimeoutError: BackendUnavailableError,
    ConnectionError: BackendUnavailableError,
    OSError: BackendUnavailableError,
    rexc.RedisError: BackendError,
}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)
_FLOAT_EXACT_US = 2**32 * 1_000_000


def to_us(value: datetime) -> int:
    """Return a datetime as integer microseconds since the epoch (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return (value - _EPOCH) // _MICRO


def to_ms(value: datetime) -> int:
    """Return a datetime as integer milliseconds since the epoch, rounded up."""
    return -(-to_us(value) // 1000)


def from_us(value: bytes | str | int) -> datetime:
    """Inverse of :func:`to_us`.

    Through a float when that is exact, about 40% cheaper than adding a
    timedelta (claimed rows carry several timestamps): before 2106 (2**32
    seconds) a double's error on the seconds is under half a microsecond,
    and ``fromtimestamp`` rounds to the nearest one.
    """
    micros = int(value)
    if 0 <= micros < _FLOAT_EXACT_US:
        return datetime.fromtimestamp(micros / 1_000_000, timezone.utc)
    return _EPOCH + timedelta(microseconds=micros)


def _pool_health_options() -> dict[str, Any]:
    """Keep redis-py's stale-connection check on.

    redis-py 8 skips the pool's check for connections the server closed while
    maintenance notifications are "auto" (its default); with retries off, the
    first command on such a connection would fail although the server is back.
    """
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # redis-py < 8 always checks
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


#: bumped in a forked child (a process-pool task that enqueues through the components it
#: inherited). Connections opened before the fork belong to the parent: their sockets, and the
#: parent event loop's epoll registrations, are shared with it, so the child must neither use
#: nor close them.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation  # one counter for the whole process, by design
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
        self.reader = hiredis.Reader(replyError=_reply_error)
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


def _reply_error(message: str) -> rexc.ResponseError:
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


class _Lane:
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
        self._generation = _fork_generation  # the process the protocol's connection belongs to
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
        if self._generation != _fork_generation:
            protocol = self._protocol = self._watchdog = None  # the parent's: leave it be
            self._generation = _fork_generation
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
            return [await future for future in futures]
        except BaseException:
            # Cancelled or failed between send and reply: a reply may still come, so the
            # connection cannot be reused.
            self.close()
            raise
        finally:
            self._busy = False

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        watchdog, self._watchdog = self._watchdog, None
        if self._generation != _fork_generation:
            return  # opened by the parent process: closing it here would unhook it there
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        if watchdog is not None:
            watchdog.cancel()


class RedisClient:
    """A lazily connected ``redis.asyncio`` client plus script runner.

    Args:
        url: ``redis://`` or ``rediss://`` URL (password allowed; never logged).
        blocking: build the client for long blocking calls (no socket timeout).
        options: extra keyword arguments for ``redis.asyncio.Redis.from_url``.
    """

    def __init__(self, url: str, *, blocking: bool = False, **options: Any) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(f"url={redact_url(url)!r} is not valid: expected a redis:// or rediss:// URL")
        self.url = url
        self._options: dict[str, Any] = {
            "socket_connect_timeout": 5.0,
            "socket_timeout": None if blocking else 30.0,
            # Scripts are not idempotent: a blind retry after a lost reply could apply one twice.
            # Failures surface as BackendUnavailableError and the worker backs off instead.
            "retry": Retry(NoBackoff(), 0),
            **_pool_health_options(),
            **options,
        }
        self._redis: aioredis.Redis | None = None
        self._blocking = blocking
        self._lane: _Lane | None = None
        self._generation = _fork_generation

    @property
    def redis(self) -> Any:
        """The connected client (``redis.asyncio.Redis`` with ``decode_responses=False``).

        Typed ``Any`` on purpose: redis-py annotates every reply as a union of
        the bytes and str (and sync and async) variants, while this client
        always returns bytes.
        """
        if self._redis is None:
            raise BackendError("the Redis component is not connected: call connect() first")
        return self._redis

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Translate driver errors raised inside the block."""
        with map_exceptions(_ERRORS, url=self.url):
            yield

    async def connect(self, *, load_scripts: bool = True) -> None:
        """Open the pool, check the server answers and load the scripts."""
        if self._redis is not None:
            return
        client = aioredis.Redis.from_url(self.url, decode_responses=False, **self._options)
        try:
            with self.errors():
                await client.ping()
                if load_scripts:
                    async with client.pipeline(transaction=False) as pipe:
                        for script in SCRIPTS.values():
                            pipe.script_load(script.source)
                        await pipe.execute()
        except BaseException:
            await client.aclose()
            raise
        self._redis = client
        self._generation = _fork_generation
        pool = client.connection_pool
        if _Lane.supports(pool.connection_kwargs):
            self._lane = _Lane(pool.connection_kwargs, pool.connection_class)

    async def close(self) -> None:
        """Close the pool; safe to call twice."""
        client, self._redis = self._redis, None
        lane, self._lane = self._lane, None
        if lane is not None:
            lane.close()
        if client is not None and self._generation == _fork_generation:
            await client.aclose()  # (a forked child leaves the parent's pool alone)

    async def run(self, name: str, args: Sequence[Any], keys: Sequence[str] = ()) -> Any:
        """Run a script by SHA, loading it again when the server lost it (restart, SCRIPT FLUSH).

        Sequential callers (a producer's enqueue loop, a worker's claims and
        finishes) go through the lane; concurrent ones through the pool.
        """
        script = SCRIPTS[name]
        lane = self._lane
        if lane is not None and lane.free:
            try:
                return await lane.call("EVALSHA", script.sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                pass  # the script did not run: the pool path below loads it and runs it
            except Exception:
                with self.errors():
                    raise
        client = self.redis
        with self.errors():
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                await client.script_load(script.source)
                return await client.evalsha(script.sha, len(keys), *keys, *args)

    async def pipeline(self, commands: Sequence[Sequence[Any]], *, timeout: float | None) -> list[Any]:
        """Run raw commands in one round trip; replies in order, error replies as exception objects.

        On the lane when it is free, else on a pooled connection. ``timeout``
        bounds the lane's wait for the replies (give blocking commands their
        own block time plus a margin).
        """
        lane = self._lane
        with self.errors():
            if lane is not None and lane.free:
                return await lane.call_many(commands, timeout)
            async with self.redis.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return list(await pipe.execute(raise_on_error=False))

    async def run_many(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run several scripts (without KEYS) in one pipelined round trip; results in order."""
        if len(calls) == 1:
            return [await self.run(calls[0][0], calls[0][1])]
        client = self.redis
        with self.errors():
            async with client.pipeline(transaction=False) as pipe:
                for name, args in calls:
                    pipe.evalsha(SCRIPTS[name].sha, 0, *args)
                results = await pipe.execute(raise_on_error=False)
            for index, result in enumerate(results):
                if isinstance(result, rexc.NoScriptError):
                    # That call did not run, so running it again is safe.
                    results[index] = await self.run(calls[index][0], calls[index][1])
                elif isinstance(result, Exception):
                    raise result
        return list(results)

    async def check_eviction_policy(self) -> None:
        """Warn when Redis may evict keys (tasks could silently disappear)."""
        try:
            with self.errors():
                reply = await self.redis.config_get("maxmemory-policy")
        except BackendError:
            return  # CONFIG is often disabled on managed Redis; the check is advisory.
        policy = reply.get(b"maxmemory-policy", reply.get("maxmemory-policy"))
        if isinstance(policy, bytes):
            policy = policy.decode()
        if policy and policy != "noeviction":
            logger.warning(
                "Redis at %s has maxmemory-policy=%s: under memory pressure it may evict tasks; "
                "set maxmemory-policy noeviction",
                redact_url(self.url),
                policy,
            )
