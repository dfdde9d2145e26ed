"""The NATS server's clock: leases, etas and recovery are judged on the engine's time, not ours."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from omniq_nats.jetstream import TIMEOUT, APIError, api
from omniq_nats.kv import parse_time

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["EngineClock"]

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
            await self.nc.request(self.subject, b"", timeout=TIMEOUT)
            try:
                stored = await api(self.nc, f"STREAM.MSG.GET.{self.stream}", {"last_by_subj": self.subject})
            except APIError as exc:  # the key was purged meanwhile
                if exc.code != _NO_MESSAGE_FOUND or attempt == _CLOCK_PROBES - 1:
                    raise
                continue
            break
        after = time.time()
        server = parse_time(stored["message"]["time"]).timestamp()
        # the stamp was taken between our two calls' send times; assume the middle of the first.
        self.offset = server - (before + (after - before) / 4)
        self._checked = time.monotonic()

    async def now(self) -> datetime:
        """Engine time as an aware UTC datetime."""
        if time.monotonic() - self._checked > self.refresh:
            await self.sync()
        return datetime.fromtimestamp(time.time() + self.offset, timezone.utc)

    def local(self, moment: datetime) -> float:
        """``moment`` (engine time) as epoch seconds of our clock."""
        return moment.timestamp() - self.offset

    @staticmethod
    def ns_until(moment: datetime | None, now: datetime) -> int:
        """Nanoseconds from ``now`` to ``moment`` (0 when past or None)."""
        if moment is None:
            return 0
        return max(int((moment - now) / timedelta(microseconds=1)) * 1000, 0)
