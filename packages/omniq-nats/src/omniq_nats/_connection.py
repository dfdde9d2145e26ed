"""The thin layer over nats-py every component shares.

* :func:`open_connection`: connect lazily with OmniQ's error translation.
* :class:`Bucket`: revision-checked KV operations spoken directly to the
  bucket's stream (direct get, publish with ``Nats-Expected-Last-Subject-Sequence``),
  returning ``None`` on a lost compare-and-set instead of raising, so a batch
  of them can be pipelined with :func:`gather`.
* :func:`pull`: one no-wait pull request on a durable consumer (never a
  lingering one, which could capture messages after its caller gave up).
* :func:`scan`: read every message of a stream (ephemeral consumer, no acks).
* :class:`EngineClock`: the server's clock, from the timestamp it stores on a probe message.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import weakref
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from omniq.base import map_exceptions
from omniq.errors import BackendError, BackendUnavailableError, OmniQError, PayloadTooLargeError
from omniq_nats.subjects import KV_OPERATION, kv_stream

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable, Mapping, Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = [
    "DEFAULT_URL",
    "NATS_ERRORS",
    "Bucket",
    "EngineClock",
    "Entry",
    "answered",
    "api",
    "drop_prefix",
    "ensure_kv",
    "ensure_stream",
    "gather",
    "mux",
    "open_connection",
    "pull",
    "scan",
]

logger = logging.getLogger("omniq.nats")

T = TypeVar("T")

#: the URL used when none is configured.
DEFAULT_URL = "nats://127.0.0.1:4222"

#: driver exceptions -> OmniQ errors, most specific first.
NATS_ERRORS: dict[type[BaseException], type[OmniQError]] = {
    nats.errors.MaxPayloadError: PayloadTooLargeError,
    nats.errors.NoServersError: BackendUnavailableError,
    nats.errors.ConnectionClosedError: BackendUnavailableError,
    nats.errors.ConnectionReconnectingError: BackendUnavailableError,
    nats.errors.StaleConnectionError: BackendUnavailableError,
    nats.errors.UnexpectedEOF: BackendUnavailableError,
    nats.errors.OutboundBufferLimitError: BackendUnavailableError,
    nats.errors.NoRespondersError: BackendUnavailableError,
    nats.js.errors.ServiceUnavailableError: BackendUnavailableError,
    TimeoutError: BackendUnavailableError,  # nats.errors.TimeoutError and asyncio's
    asyncio.TimeoutError: BackendUnavailableError,
    ConnectionError: BackendUnavailableError,
    OSError: BackendUnavailableError,
    nats.errors.Error: BackendError,
}

_API = "$JS.API"
_WRONG_LAST_SEQUENCE = 10071  # JSStreamWrongLastSequenceErrF: a lost compare-and-set
_STREAM_IN_USE = 10058  # JSStreamNameExistErr: exists with another config
_TIMEOUT = 10.0  # seconds one JetStream API call may take
_FIRST_CONNECT_ATTEMPTS = 2  # retries of the very first connect before BackendUnavailableError


async def open_connection(url: str, name: str, **options: Any) -> Client:
    """Connect to ``url``; connection failures raise BackendUnavailableError (URL redacted).

    A deliberate ``close()`` logs nothing above DEBUG: nats-py reports it
    through the same callbacks as a lost connection, after marking the client closed.
    """
    client: list[Client] = []  # set once connected: the callbacks ask it whether it is being closed

    def closing() -> bool:
        return bool(client) and client[0].is_closed

    async def on_error(exc: Exception) -> None:
        level = logging.DEBUG if closing() else logging.WARNING
        logger.log(level, "NATS connection error: %s", type(exc).__name__)

    async def on_disconnect() -> None:
        if closing():
            logger.debug("NATS connection closed")
        else:
            logger.info("NATS connection lost; reconnecting")

    settings: dict[str, Any] = {
        "name": name,
        "connect_timeout": 2,
        "reconnect_time_wait": 0.5,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "allow_reconnect": True,
        # No client-side buffering while disconnected: a publish then fails at once (mapped to
        # BackendUnavailableError) instead of failing the caller and being sent on reconnect anyway.
        "pending_size": 0,
    }
    settings.update(options)
    # nats-py applies max_reconnect_attempts to the first connect too: keep that one short, then
    # let a connected client reconnect for as long as it takes (a worker outlives server restarts).
    runtime_attempts = settings.pop("max_reconnect_attempts", -1)
    settings["max_reconnect_attempts"] = _FIRST_CONNECT_ATTEMPTS
    with map_exceptions(NATS_ERRORS, url=url):
        nc = await nats.connect(url, **settings)
    client.append(nc)
    nc.options["max_reconnect_attempts"] = runtime_attempts
    return nc


class _APIError(BackendError):
    """A JetStream API call returned an error."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


async def api(nc: Client, subject: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Call ``$JS.API.<subject>`` and return the JSON answer; errors raise :class:`_APIError`."""
    body = json.dumps(payload).encode() if payload is not None else b""
    reply = await nc.request(f"{_API}.{subject}", body, timeout=_TIMEOUT)
    answer: dict[str, Any] = json.loads(reply.data or b"{}")
    error = answer.get("error")
    if error:
        raise _APIError(f"JetStream {subject}: {error.get('description', error)}", int(error.get("err_code", 0)))
    return answer


class _Batch:
    """Answers of one batch of requests, and the future set when the last one arrives."""

    __slots__ = ("answers", "done", "left")

    def __init__(self, size: int) -> None:
        self.answers: list[Any] = [None] * size
        self.left = size
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Mux:
    """Requests answered on one inbox subscription of a connection.

    nats-py's ``request`` costs a future, a timer and (under ``gather``) a task
    per request; a worker sends several per task, so that overhead was a large
    share of its CPU. Here a batch of requests shares one future and one
    timeout, and no task is created.
    """

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
        self, requests: Sequence[tuple[str, bytes, dict[str, str] | None]], timeout: float = _TIMEOUT
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
        try:
            for index, (subject, payload, headers) in enumerate(requests):
                token = str(next(self._tokens))
                tokens.append(token)
                self._waiting[token] = (batch, index)
                await self.nc.publish(subject, payload, reply=self.prefix + token, headers=headers)
            if batch.left:
                await asyncio.wait_for(asyncio.shield(batch.done), timeout)
        except asyncio.TimeoutError:
            raise nats.errors.TimeoutError from None
        finally:
            if batch.left:
                for token in tokens:
                    self._waiting.pop(token, None)
        return batch.answers

    async def request(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None, timeout: float = _TIMEOUT
    ) -> Msg:
        """One request (see :meth:`request_many`)."""
        return (await self.request_many([(subject, payload, headers)], timeout))[0]


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


async def ensure_stream(nc: Client, config: StreamConfig) -> None:
    """Create ``config``'s stream, or update it when it exists with other settings."""
    body = config.as_dict()
    try:
        await api(nc, f"STREAM.CREATE.{config.name}", body)
    except _APIError as exc:
        if exc.code != _STREAM_IN_USE:
            raise
        await api(nc, f"STREAM.UPDATE.{config.name}", body)


async def ensure_kv(nc: Client, bucket: str, *, ttl: float | None = None) -> Bucket:
    """Create a KV bucket (history 1, direct gets) unless it exists; return its handle."""
    config = StreamConfig(
        name=kv_stream(bucket),
        subjects=[f"$KV.{bucket}.>"],
        allow_direct=True,
        allow_rollup_hdrs=True,
        deny_delete=True,
        discard=DiscardPolicy.NEW,
        max_age=ttl,
        max_msgs_per_subject=1,
        num_replicas=1,
        storage=StorageType.FILE,
        duplicate_window=min(ttl, 120.0) if ttl else 120.0,
    )
    await ensure_stream(nc, config)
    return Bucket(nc, bucket)


class Entry(msgspec.Struct, frozen=True):
    """The current state of one KV key."""

    value: bytes
    revision: int
    deleted: bool
    time: datetime | None


class Bucket:
    """Revision-checked operations on one KV bucket."""

    def __init__(self, nc: Client, name: str) -> None:
        self.nc = nc
        self.name = name
        self.stream = kv_stream(name)
        self.prefix = f"$KV.{name}."
        self.mux = mux(nc)

    def subject(self, key: str) -> str:
        """Subject of ``key``."""
        return self.prefix + key

    async def get(self, key: str) -> Entry | None:
        """The key's entry (``deleted`` for a tombstone), or None when it never existed."""
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """:meth:`get` for several keys, pipelined."""
        base = f"{_API}.DIRECT.GET.{self.stream}.{self.prefix}"
        answers = await self.mux.request_many([(base + key, b"", None) for key in keys])
        return [self._entry(msg) for msg in answers]

    def _entry(self, msg: Msg) -> Entry | None:
        headers = answered(msg).headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status:
            raise BackendError(f"KV get on {self.name}: {status} {headers.get('Description', '')}")
        stamp = headers.get("Nats-Time-Stamp")
        return Entry(
            value=msg.data,
            revision=int(headers["Nats-Sequence"]),
            deleted=headers.get(KV_OPERATION) in ("DEL", "PURGE"),
            time=_parse_time(stamp) if stamp else None,
        )

    async def _publish_many(self, writes: Sequence[tuple[str, bytes, dict[str, str] | None]]) -> list[int | None]:
        answers = await self.mux.request_many([(self.prefix + key, value, headers) for key, value, headers in writes])
        return [self.written(reply) for reply in answers]

    def written(self, reply: Msg) -> int | None:
        """The revision a write's answer reports (None: a lost compare-and-set); other errors raise."""
        answer = json.loads(answered(reply).data or b"{}")
        error = answer.get("error")
        if error:
            if error.get("err_code") == _WRONG_LAST_SEQUENCE:
                return None
            raise BackendError(f"KV write on {self.name}: {error.get('description', error)}")
        return int(answer["seq"])

    async def put(self, key: str, value: bytes) -> int:
        """Write unconditionally; return the new revision."""
        return (await self.put_many([(key, value)]))[0]

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        """:meth:`put` for several keys, pipelined."""
        revisions = await self._publish_many([(key, value, None) for key, value in items])
        assert None not in revisions  # an unconditional write cannot lose a compare-and-set
        return revisions  # type: ignore[return-value]

    async def update(self, key: str, value: bytes, last: int) -> int | None:
        """Write only if the key is at revision ``last`` (0: does not exist); None when it is not."""
        return (await self.update_many([(key, value, last)]))[0]

    async def update_many(self, items: Sequence[tuple[str, bytes, int]]) -> list[int | None]:
        """:meth:`update` for several keys, pipelined: one answer each, in order."""
        return await self._publish_many(
            [(key, value, {"Nats-Expected-Last-Subject-Sequence": str(last)}) for key, value, last in items]
        )

    async def delete(self, key: str, last: int | None = None) -> int | None:
        """Replace the key by a tombstone (checked against ``last`` when given)."""
        headers = {KV_OPERATION: "DEL"}
        if last is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(last)
        return (await self._publish_many([(key, b"", headers)]))[0]

    async def remove(self, key: str) -> int:
        """Remove the key without leaving a tombstone; return how many messages went."""
        answer = await api(self.nc, f"STREAM.PURGE.{self.stream}", {"filter": self.prefix + key})
        return int(answer.get("purged", 0))

    async def clear(self) -> int:
        """Remove every key; return how many messages went."""
        answer = await api(self.nc, f"STREAM.PURGE.{self.stream}", {})
        return int(answer.get("purged", 0))

    async def entries(self) -> list[tuple[str, Entry]]:
        """Every live key and its entry (tombstones skipped)."""
        out: list[tuple[str, Entry]] = []
        cut = len(self.prefix)
        for msg in await scan(self.nc, self.stream, self.prefix + ">"):
            headers = msg.headers or {}
            if headers.get(KV_OPERATION) in ("DEL", "PURGE"):
                continue
            meta = msg.metadata
            out.append((msg.subject[cut:], Entry(msg.data, meta.sequence.stream, False, meta.timestamp)))
        return out


def _parse_time(text: str) -> datetime:
    # "2024-01-01T00:00:00.123456789Z": Python parses at most microseconds.
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _is_status(msg: Msg) -> str | None:
    if msg.headers is None:
        return None
    return msg.headers.get("Status")


async def pull(nc: Client, stream: str, consumer: str, batch: int, *, expires: float | None = None) -> list[Msg]:
    """Fetch up to ``batch`` messages from a durable pull consumer.

    Without ``expires`` the request is no-wait: the server answers at once
    with what it has. With ``expires`` it waits up to that many seconds for
    the first message.
    """
    msgs: list[Msg] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def collect(msg: Msg) -> None:
        if done.done():
            return
        status = _is_status(msg)
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
            wait = _TIMEOUT
        else:
            request["expires"] = int(expires * 1e9)
            wait = expires + _TIMEOUT
        await nc.publish(f"{_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}", json.dumps(request).encode(), reply=inbox)
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


#: JSNoMessageFoundErr
_NO_MESSAGE_FOUND = 10037
#: clock probes tried when the probe key keeps disappearing (purged by another process)
_CLOCK_PROBES = 5


class EngineClock:
    """The NATS server's clock, as an offset from ours refreshed every ``refresh`` seconds.

    JetStream has no "what time is it" call, but it stamps every stored
    message: the probe publishes to ``subject`` and reads the stamp back.
    """

    def __init__(self, nc: Client, stream: str, subject: str, refresh: float = 60.0) -> None:
        self.nc = nc
        self.stream = stream
        self.subject = subject
        self.refresh = refresh
        self.offset = 0.0
        self._checked = float("-inf")

    async def sync(self) -> None:
        """Measure the offset now.

        Reads back the probe key's latest message, not ours by sequence: the
        key keeps one message, and another process probing at the same moment
        may have replaced ours. Its stamp was taken between our publish and
        our read just the same, so it measures the clock as well.
        """
        for attempt in range(_CLOCK_PROBES):
            before = time.time()
            await self.nc.request(self.subject, b"", timeout=_TIMEOUT)
            try:
                stored = await api(self.nc, f"STREAM.MSG.GET.{self.stream}", {"last_by_subj": self.subject})
            except _APIError as exc:  # the key was purged meanwhile
                if exc.code != _NO_MESSAGE_FOUND or attempt == _CLOCK_PROBES - 1:
                    raise
                continue
            break
        after = time.time()
        server = _parse_time(stored["message"]["time"]).timestamp()
        # the stamp was taken between our two calls' send times; assume the middle of the first.
        self.offset = server - (before + (after - before) / 4)
        self._checked = time.monotonic()

    async def now(self) -> datetime:
        """Engine time as an aware UTC datetime."""
        if time.monotonic() - self._checked > self.refresh:
            await self.sync()
        return datetime.fromtimestamp(time.time() + self.offset, timezone.utc)

    def ns_until(self, moment: datetime, now: datetime) -> int:
        """Nanoseconds from ``now`` to ``moment`` (0 when past)."""
        return max(int((moment - now) / timedelta(microseconds=1)) * 1000, 0)


async def _delete_stream(nc: Client, stream: str) -> int:
    try:
        await api(nc, f"STREAM.DELETE.{stream}")
    except _APIError as exc:
        if exc.code != 10059:  # JSStreamNotFoundErr
            raise
        return 0
    return 1


async def drop_prefix(url: str | None, prefix: str) -> int:
    """Delete every stream and bucket OmniQ created under ``prefix``; return how many existed.

    For tests and teardown scripts: all tasks, results and events under the
    prefix are gone afterwards.
    """
    from omniq_nats import subjects as names

    streams = [
        names.work_stream(prefix),
        names.leases_stream(prefix),
        names.events_stream(prefix),
        kv_stream(names.tasks_bucket(prefix)),
        kv_stream(names.unique_bucket(prefix)),
        kv_stream(names.results_bucket(prefix)),
    ]
    url = url or DEFAULT_URL
    nc = await open_connection(url, "omniq-admin")
    deleted = 0
    try:
        with map_exceptions(NATS_ERRORS, url=url):
            for stream in streams:
                deleted += await _delete_stream(nc, stream)
    finally:
        await nc.close()
    return deleted
