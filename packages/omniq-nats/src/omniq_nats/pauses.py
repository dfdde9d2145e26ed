"""Paused queues: one set in the flow bucket, mirrored by every task queue connection.

``set_queue_paused`` changes the set (``<prefix>_flow`` key ``paused``) by
compare-and-set; the value carries a version, one more per change. The
writer announces the value it wrote on ``<prefix>.paused`` (plain NATS).
Not the KV key's own subject: a subscriber there would also get the writes
whose compare-and-set JetStream refused. Every connection subscribes and
keeps a local copy, so a claim skips paused queues by a look at a local set,
with no round trip. The copy is read at connect and
again every :data:`REFRESH` seconds, which catches a change published while
the connection was away. A change that resumes a queue pokes the
connection's wake-ups, so its waiting claimers look again at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from omniq.errors import BackendError
from omniq_nats import subjects as names
from omniq_nats.records import CAS_ROUNDS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.msg import Msg

    from omniq_nats.kv import Bucket, Entry
    from omniq_nats.wakeups import Wakeups

__all__ = ["REFRESH", "PausedQueues"]

#: seconds between two reads of the set (the subscription keeps it current in between).
REFRESH = 30.0


class _Paused(msgspec.Struct, array_like=True):
    version: int = 0
    queues: list[str] = []


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Paused).decode


def _value(entry: Entry | None) -> _Paused:
    if entry is None or entry.deleted or not entry.value:
        return _Paused()
    try:
        return _decode(entry.value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Paused()


class PausedQueues:
    """One connection's copy of the paused queues, and the changes to them."""

    def __init__(self, bucket: Bucket, wake: Wakeups, prefix: str) -> None:
        self.bucket = bucket
        self.subject = names.paused_subject(prefix)
        self.wake = wake
        #: the paused queues as last seen.
        self.queues: frozenset[str] = frozenset()
        self._version = -1
        self._checked = float("-inf")

    async def start(self) -> None:
        """Subscribe to changes, then read the set."""
        await self.bucket.nc.subscribe(self.subject, cb=self._on_change)
        await self.refresh()

    async def refresh(self) -> None:
        """Read the set from the engine."""
        self._apply(_value(await self.bucket.get(names.PAUSED_KEY)))
        self._checked = time.monotonic()

    async def _on_change(self, msg: Msg) -> None:
        try:
            self._apply(_decode(msg.data))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return

    def _apply(self, value: _Paused) -> None:
        if value.version <= self._version:
            return  # an older value than one already seen (a read and a publication crossed)
        queues = frozenset(value.queues)
        resumed = self.queues - queues
        self._version, self.queues = value.version, queues
        if resumed:
            self.wake.poke()

    async def live(self, queues: Sequence[str]) -> Sequence[str]:
        """``queues`` without the paused ones (``queues`` itself when none is paused)."""
        if time.monotonic() - self._checked > REFRESH:
            await self.refresh()
        paused = self.queues
        if not paused:
            return queues
        return [queue for queue in queues if queue not in paused]

    async def read(self) -> list[str]:
        """The paused queues, read from the engine, sorted."""
        return sorted(_value(await self.bucket.get(names.PAUSED_KEY)).queues)

    async def set(self, queue: str, paused: bool) -> None:
        """Pause or resume ``queue`` (compare-and-set on the set; nothing is written when it is already so).

        Raises:
            BackendError: the set is contended beyond retry.
        """
        for _ in range(CAS_ROUNDS * 2):
            entry = await self.bucket.get(names.PAUSED_KEY)
            current = _value(entry)
            queues = set(current.queues)
            if (queue in queues) == paused:
                self._apply(current)
                return
            if paused:
                queues.add(queue)
            else:
                queues.discard(queue)
            value = _Paused(current.version + 1, sorted(queues))
            revision = 0 if entry is None else entry.revision
            encoded = _encode(value)
            if await self.bucket.update(names.PAUSED_KEY, encoded, revision) is not None:
                self._apply(value)
                await self.bucket.nc.publish(self.subject, encoded)
                await self.bucket.nc.flush()
                return
        raise BackendError(f"the paused queues are contended beyond retry (setting {queue!r})")
