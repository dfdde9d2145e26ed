"""ETAs, recurring ticks and retry back-off."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from omniq import ConfigurationError
from omniq.models import utcnow
from omniq.scheduling import backoff_delay, next_cron_tick, next_run, resolve_eta, validate_cron


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)]:
        delays = [backoff_delay(attempt, 1.0, 30.0, rng=rng) for _ in range(200)]
        assert min(delays) >= ceiling / 2
        assert max(delays) <= ceiling
        assert len(set(delays)) > 1  # jittered, not lock-step


def test_interval_ticks_are_anchored_and_skip_missed_ones() -> None:
    now = utcnow()
    assert next_run(interval=10, cron=None, after=now) == now + timedelta(seconds=10)
    long_ago = now - timedelta(seconds=35)
    tick = next_run(interval=10, cron=None, after=long_ago)
    assert now < tick <= now + timedelta(seconds=10)
    assert (tick - long_ago).total_seconds() % 10 == pytest.approx(0, abs=1e-6)


def test_cron_ticks() -> None:
    start = datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
    assert next_cron_tick("*/5 * * * *", start) == datetime(2026, 1, 1, 12, 5, tzinfo=timezone.utc)
    assert next_run(interval=None, cron="* * * * *", after=start) > utcnow() - timedelta(minutes=1)


def test_invalid_cron_and_eta_options() -> None:
    with pytest.raises(ConfigurationError, match="cron"):
        validate_cron("every tuesday")
    with pytest.raises(ConfigurationError, match="either eta or delay"):
        resolve_eta(utcnow(), 5)
    with pytest.raises(ConfigurationError, match="negative"):
        resolve_eta(None, -1)


def test_naive_eta_is_local_time_and_delay_accepts_timedelta() -> None:
    naive = datetime.now() + timedelta(hours=1)
    eta = resolve_eta(naive, None)
    assert eta is not None and eta.tzinfo is timezone.utc
    assert abs((eta - utcnow()).total_seconds() - 3600) < 5
    delayed = resolve_eta(None, timedelta(seconds=30))
    assert delayed is not None and 25 < (delayed - utcnow()).total_seconds() <= 30
