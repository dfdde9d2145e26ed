"""Blocking calls: the Lua scripts run from a thread with no event loop (the sync API's enqueue).

``Capability.BLOCKING_ENQUEUE`` lets the sync ``OmniQ`` enqueue in the
caller's thread instead of handing each call to its loop thread. The calls
go out on connections of their own, kept on a free list: redis-py's
``Connection`` opens each one (its handshake, TLS, unix sockets, timeouts),
and the calls are then written to its socket directly and the replies
parsed by hiredis, the lane's way (:mod:`omniq_redis.lane`).

Why not redis-py's client: ``python benchmarks/redis_blocking_cost.py 3 3000`` (A/B in one
process: the whole sync ``OmniQ.enqueue``, the same scripts sent either way; 2-core machine, the
test suite running beside it), median [range] µs per call:

==========================  ==================  ==================
transport (2026-12-06)      wall                client CPU
==========================  ==================  ==================
this module                 45.4 [41.1-49.0]    21.7 [20.2-22.8]
redis-py ``Redis.evalsha``  82.5 [66.3-94.2]    45.6 [41.1-48.1]
==========================  ==================  ==================

redis-py's pool checkout and health check, its command encoder and its
reply reader cost more Python than the rest of the enqueue together.

A connection is polled before it is written to (one syscall: the server
may have closed it while it sat unused, on a restart or a client timeout);
one that fails is dropped, since a reply may still come. Scripts are never
retried blindly: a call lost in flight surfaces as ``BackendUnavailableError``.
"""

from __future__ import annotations

import select
import threading
from typing import TYPE_CHECKING, Any

import hiredis
import redis
from redis import exceptions as rexc

from omniq_redis.lane import reply_error
from omniq_redis.scripts import SCRIPTS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["BlockingCalls"]

#: the receive buffer of one connection.
_READ_BUFFER = 64 * 1024


class _Line:
    """One connection: redis-py's (it opens the socket), a hiredis reader, a buffer, a poller of its socket."""

    __slots__ = ("buffer", "connection", "poller", "reader")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.reader = hiredis.Reader(replyError=reply_error)
        self.buffer = memoryview(bytearray(_READ_BUFFER))
        self.poller: Any = None  # (select.poll: not a type on every platform's stubs)


class BlockingCalls:
    """Commands and scripts run to the end in the calling thread, over connections of a free list.

    Thread-safe: each call takes a connection off the list (or opens one) and
    puts it back when it is done.

    Args:
        url: the Redis URL.
        settings: ``redis.ConnectionPool.from_url`` keyword arguments (the
            components' socket timeouts and options).
    """

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        self._url = url
        self._settings = dict(settings)
        self._pool: Any = None  # the redis-py pool that makes the connections, made on first use
        self._lock = threading.Lock()
        self._idle: list[_Line] = []

    def run(self, name: str, args: Sequence[Any], keys: Sequence[str] = ()) -> Any:
        """Run one script by SHA (loading it when the server lost it); an error reply raises."""
        script = SCRIPTS[name]
        (reply,) = self.call([("EVALSHA", script.sha, len(keys), *keys, *args)])
        if isinstance(reply, rexc.NoScriptError):  # the script did not run: load it and run it
            self.call([("SCRIPT", "LOAD", script.source)])
            (reply,) = self.call([("EVALSHA", script.sha, len(keys), *keys, *args)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    def run_many(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run several scripts (without KEYS) in one pipelined round trip; an error reply raises."""
        replies = self.call([("EVALSHA", SCRIPTS[name].sha, 0, *args) for name, args in calls])
        for index, reply in enumerate(replies):
            if isinstance(reply, rexc.NoScriptError):  # that call did not run: running it again is safe
                replies[index] = self.run(calls[index][0], calls[index][1])
            elif isinstance(reply, Exception):
                raise reply
        return replies

    def call(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run commands pipelined in one write; replies in order, error replies as exception objects."""
        line = self._take()
        count = len(commands)
        replies: list[Any] = []
        try:
            sock = line.connection._sock
            sock.sendall(b"".join([hiredis.pack_command(command) for command in commands]))
            reader, buffer = line.reader, line.buffer
            while len(replies) < count:
                reply = reader.gets()
                if reply is False:
                    received = sock.recv_into(buffer)
                    if not received:
                        raise rexc.ConnectionError("Redis closed the connection")
                    reader.feed(buffer, 0, received)  # type: ignore[arg-type]  # hiredis reads any buffer (its stub says bytes)
                else:
                    replies.append(reply)
        except BaseException:
            line.connection.disconnect()  # a reply may still come: never reuse it
            raise
        self._idle.append(line)
        return replies

    def _take(self) -> _Line:
        try:
            line = self._idle.pop()
        except IndexError:
            line = _Line(self._make_connection())
        connection = line.connection
        if line.poller is not None and line.poller.poll(0):
            connection.disconnect()  # an unused connection has nothing to say: the server closed it
        if connection._sock is None:
            connection.connect()  # the handshake (AUTH, SELECT, CLIENT SETNAME) is redis-py's
            line.reader = hiredis.Reader(replyError=reply_error)
            line.poller = select.poll()
            line.poller.register(connection._sock, select.POLLIN)
        return line

    def _make_connection(self) -> Any:
        with self._lock:
            if self._pool is None:
                self._pool = redis.ConnectionPool.from_url(self._url, **self._settings)
            return self._pool.make_connection()

    def close(self) -> None:
        """Close the idle connections (those in use are closed by their callers' failure, or dropped)."""
        while self._idle:
            self._idle.pop().connection.disconnect()
