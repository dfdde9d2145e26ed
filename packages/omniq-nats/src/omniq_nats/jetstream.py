"""Requests to JetStream on one nats-py connection: API calls, pipelined batches, pulls, scans.

* :func:`api`: one ``$JS.API`` call, its error raised as :class:`APIError`.
* :class:`Mux`: a batch of requests answered on one inbox subscription (one
  future and one timeout per batch, no task per request), so a worker's many
  small writes go out back to back and are awaited once.
* :func:`pull`: one pull request on a durable consumer (no-wait, or waiting up
  to ``expires``; never a lingering one that could capture messages after its
  caller gave up).
* :func:`scan`: read every message of a stream (ephemeral consumer, no acks).

Why a ``Mux`` rather than nats-py's ``nc.request`` / ``js.publish`` under
``asyncio.gather``: nats-py spends a future, a timer and (under ``gather``) a
task per request. Kept because it is worth more than 15 % on the hot paths,
measured against that library lane (the same queue code otherwise; 5
interleaved rounds, medians (ranges), 2-core machine shared with other work)::

    python benchmarks/nats_client_cost.py 5

    figure                         Mux                 nc.request lane     Mux's gain
    single enqueue /s              4138 (3786-4564)    3548 (3353-3826)    1.17x
      client CPU us/enqueue        157 (143-181)       200 (187-206)       1.27x
    drain 2,000 tasks/s            7137 (5404-7363)    3704 (3320-4167)    1.93x
      (claim_ready 100 + finish)
      client CPU us/task           86 (84-87)          187 (180-193)       2.17x
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import weakref
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
from nats.js.api import StreamConfig

from omniq.errors import BackendError, OmniQError
from omniq_nats.subjects import JS_API

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = [
    "STREAM_IN_USE",
    "TIMEOUT",
    "APIError",
    "Mux",
    "answered",
    "api",
    "chunked",
    "ensure_stream",
    "gather",
    "mux",
    "pull",
    "scan",
]

logger = logging.getLogger("omniq.nats")

T = TypeVar("T")

#: seconds one JetStream API call or batch of requests may take.
TIMEOUT = 10.0
#: JSStreamNameExistErr: the stream exists with another config.
STREAM_IN_USE = 10058


class APIError(BackendError):
    """A JetStream API call returned an error (``code`` is JetStream's ``err_code``)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


async def api(nc: Client, subject: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Call ``$JS.API.<subject>`` and return the JSON answer; errors raise :class:`APIError`."""
    body = json.dumps(payload).encode() if payload is not None else b""
    reply = await nc.request(f"{JS_API}.{subject}", body, timeout=TIMEOUT)
    answer: dict[str, Any] = json.loads(reply.data or b"{}")
    error = answer.get("error")
    if error:
        raise APIError(f"JetStream {subject}: {error.get('description', error)}", int(error.get("err_code", 0)))
    return answer


async def ensure_stream(nc: Client, config: StreamConfig) -> None:
    """Create ``config``'s stream, or update it when it exists with other settings."""
    body = config.as_dict()
    try:
        await api(nc, f"STREAM.CREATE.{config.name}", body)
    except APIError as exc:
        if exc.code != STREAM_IN_USE:
            raise
        await api(nc, f"STREAM.UPDATE.{config.name}", body)


class _Batch:
    """Answers of one batch of requests, and the future set when the last one arrives."""

    __slots__ = ("answers", "done", "left")

    def __init__(self, size: int) -> None:
        self.answers: list[Any] = [None] * size
        self.left = size
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Mux:
    """Requests answered on one inbox subscription of a connection (see the module's docstring)."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox() + "."
        self._cut = len(self.prefix)
        self._tokens = itertools.count()
        self._waiting: dict[str, tuple[_Batch, int]] = {}
        self._sub: Any = None

    async def ready(self) -> None:
        """Subscribe the inbox (once; before the first request that answers to it)."""
        if self._sub is None:
            sub = await self.nc.subscribe(self.prefix + "*", cb=self._on_reply)
            if self._sub is None:
                self._sub = sub
            else:  # a concurrent first request subscribed too: one subscription is enough
                await sub.unsubscribe()

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[self._cut :]
        slot = self._waiting.pop(token, None)
        if slot is not None:
            batch, index = slot
            batch.answers[index] = msg
            batch.left -= 1
            if batch.left == 0 and not batch.done.done():
                batch.done.set_result(None)

    async def request_many(
        self, requests: Sequence[tuple[str, bytes, dict[str, str] | None]], timeout: float = TIMEOUT
    ) -> list[Msg]:
        """Send every request, then wait once for all answers (in order).

        An answer may be a no-responders status (see :func:`answered`): one
        refused request does not hide the answers of the others.

        Raises:
            nats.errors.TimeoutError: some answer did not come within ``timeout``.
        """
        if not requests:
            return []
        await self.ready()
        batch = _Batch(len(requests))
        tokens: list[str] = []
        # a timer on the batch's own future, not wait_for(shield(...)): that costs three
        # more loop iterations per batch (shield's and wait_for's callbacks), 10 % of a single enqueue.
        timer = asyncio.get_running_loop().call_later(timeout, _expire, batch.done)
        try:
            for index, (subject, payload, headers) in enumerate(requests):
                token = str(next(self._tokens))
                tokens.append(token)
                self._waiting[token] = (batch, index)
                await self.nc.publish(subject, payload, reply=self.prefix + token, headers=headers)
            if batch.left:
                await batch.done
        finally:
            timer.cancel()
            if batch.left:
                for token in tokens:
                    self._waiting.pop(token, None)
        return batch.answers

    async def request(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None, timeout: float = TIMEOUT
    ) -> Msg:
        """One request (see :meth:`request_many`)."""
        return (await self.request_many([(subject, payload, headers)], timeout))[0]


def _expire(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(nats.errors.TimeoutError())


def answered(msg: Msg) -> Msg:
    """``msg``, unless it says nothing listens on the request's subject.

    Raises:
        nats.errors.NoRespondersError: the no-responders status.
    """
    headers = msg.headers
    if headers and headers.get("Status") == "503":
        raise nats.errors.NoRespondersError
    return msg


_muxes: weakref.WeakKeyDictionary[Client, Mux] = weakref.WeakKeyDictionary()


def mux(nc: Client) -> Mux:
    """The connection's :class:`Mux` (one per connection)."""
    found = _muxes.get(nc)
    if found is None:
        found = _muxes[nc] = Mux(nc)
    return found


async def gather(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run awaitables concurrently (pipelined on one connection), results in order."""
    return list(await asyncio.gather(*calls))


async def chunked(calls: Sequence[Callable[[], Awaitable[T]]], size: int = 500) -> list[T]:
    """Run the calls ``size`` at a time (pipelined within each chunk), results in order."""
    out: list[T] = []
    for start in range(0, len(calls), size):
        out.extend(await gather(call() for call in calls[start : start + size]))
    return out


def _status(msg: Msg) -> str | None:
    if msg.headers is None:
        return None
    return msg.headers.get("Status")


async def pull(nc: Client, stream: str, consumer: str, batch: int, *, expires: float | None = None) -> list[Msg]:
    """Fetch up to ``batch`` messages from a durable pull consumer.

    Without ``expires`` the request is no-wait: the server answers at once
    with what it has. With ``expires`` it waits up to that many seconds for
    the batch to fill.
    """
    msgs: list[Msg] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def collect(msg: Msg) -> None:
        if done.done():
            return
        status = _status(msg)
        if status is None:
            msgs.append(msg)
            if len(msgs) >= batch:
                done.set_result(None)
        elif status in ("404", "408", "409"):
            done.set_result(None)  # no (more) messages, request expired, or consumer busy
        elif status != "100":
            done.set_exception(BackendError(f"pull from {stream}/{consumer}: {status}"))

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=collect)
    try:
        request: dict[str, Any] = {"batch": batch}
        if expires is None:
            request["no_wait"] = True
            wait = TIMEOUT
        else:
            request["expires"] = int(expires * 1e9)
            wait = expires + TIMEOUT
        await nc.publish(f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}", json.dumps(request).encode(), reply=inbox)
        try:
            await asyncio.wait_for(asyncio.shield(done), wait)
        except asyncio.TimeoutError:
            if not msgs:
                raise
        return list(msgs)
    finally:
        await sub.unsubscribe()


async def scan(nc: Client, stream: str, subject: str, *, start: datetime | None = None, batch: int = 1000) -> list[Msg]:
    """Every message of ``stream`` on ``subject`` (stored at ``start`` or later), oldest first.

    Uses an ephemeral consumer without acks, deleted afterwards.
    """
    config: dict[str, Any] = {
        "deliver_policy": "all" if start is None else "by_start_time",
        "ack_policy": "none",
        "filter_subject": subject,
        "inactive_threshold": int(30e9),
        "mem_storage": True,
        "num_replicas": 1,
    }
    if start is not None:
        config["opt_start_time"] = start.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    answer = await api(nc, f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config})
    name = answer["name"]
    try:
        pending = int(answer.get("num_pending", 0))
        msgs: list[Msg] = []
        while pending > 0:
            got = await pull(nc, stream, name, min(batch, pending))
            if not got:
                break
            msgs.extend(got)
            pending = got[-1].metadata.num_pending
        return msgs
    finally:
        try:
            await api(nc, f"CONSUMER.DELETE.{stream}.{name}")
        except OmniQError:
            logger.debug("could not delete scan consumer %s on %s", name, stream)
