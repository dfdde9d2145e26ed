"""KV buckets spoken to directly: direct gets and revision-checked writes, pipelined.

A :class:`Bucket` talks to the bucket's stream the way nats-py's KeyValue
does (direct get of the last message on ``$KV.<bucket>.<key>``, publish with
``Nats-Expected-Last-Subject-Sequence``), but through the connection's
:class:`~omniq_nats.jetstream.Mux`, and returns ``None`` on a lost
compare-and-set instead of raising: a batch of reads or writes is one
pipelined round trip, and the claim and finish paths write a batch each.

Kept over ``js.key_value(...)`` ``get`` / ``put`` / ``update(last=...)``
because it is worth more than 15 % on the hot path that uses it (a single
enqueue writes its record in the ticket's batch, not through these calls), measured
against that library lane (the same queue code otherwise; 5 interleaved
rounds, medians (ranges), 2-core machine shared with other work)::

    python benchmarks/nats_client_cost.py 5

    figure                         Bucket              js.key_value lane   Bucket's gain
    drain 2,000 tasks/s            7137 (5404-7363)    3771 (3245-4265)    1.89x
      (claim_ready 100 + finish)
      client CPU us/task           86 (84-87)          194 (191-198)       2.25x
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import msgspec
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from omniq.errors import BackendError
from omniq_nats.jetstream import answered, api, ensure_stream, mux, scan
from omniq_nats.subjects import JS_API, KV_OPERATION, kv_stream

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["Bucket", "Entry", "ensure_kv", "parse_time"]

_WRONG_LAST_SEQUENCE = 10071  # JSStreamWrongLastSequenceErrF: a lost compare-and-set


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
        base = f"{JS_API}.DIRECT.GET.{self.stream}.{self.prefix}"
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
            time=parse_time(stamp) if stamp else None,
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

    def update_request(self, key: str, value: bytes, last: int) -> tuple[str, bytes, dict[str, str]]:
        """The request :meth:`update` sends (to batch it with other requests; read its answer with :meth:`written`)."""
        return self.prefix + key, value, {"Nats-Expected-Last-Subject-Sequence": str(last)}

    async def update(self, key: str, value: bytes, last: int) -> int | None:
        """Write only if the key is at revision ``last`` (0: does not exist); None when it is not."""
        return (await self.update_many([(key, value, last)]))[0]

    async def update_many(self, items: Sequence[tuple[str, bytes, int]]) -> list[int | None]:
        """:meth:`update` for several keys, pipelined: one answer each, in order."""
        return await self._publish_many(
            [(key, value, {"Nats-Expected-Last-Subject-Sequence": str(last)}) for key, value, last in items]
        )

    def delete_request(self, key: str, last: int | None = None) -> tuple[str, bytes, dict[str, str]]:
        """The request :meth:`delete` sends (to batch it with other requests)."""
        headers = {KV_OPERATION: "DEL"}
        if last is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(last)
        return self.prefix + key, b"", headers

    async def delete(self, key: str, last: int | None = None) -> int | None:
        """Replace the key by a tombstone (checked against ``last`` when given)."""
        subject, value, headers = self.delete_request(key, last)
        return self.written(await self.mux.request(subject, value, headers))

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


def parse_time(text: str) -> datetime:
    """Parse a JetStream time stamp (``2024-01-01T00:00:00.123456789Z``; Python keeps microseconds)."""
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
