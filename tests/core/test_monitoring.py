"""The pure helpers of omniq.monitoring: the page cursor, the default page and statistics, retry's reset, the local registry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from omniq.errors import ConfigurationError
from omniq.models import Task, TaskError, TaskStatus
from omniq.monitoring import (
    THROUGHPUT_MINUTES,
    LocalWorkers,
    TaskQuery,
    WorkerInfo,
    decode_cursor,
    page_cursor,
    reset_for_retry,
    select_page,
    stats_of,
)
from omniq.testing import make_worker

NOW = datetime(2026, 12, 5, 12, 30, 45, 500000, tzinfo=timezone.utc)


def task(task_id: str, seconds_ago: float = 0.0, **fields: Any) -> Task:
    fields.setdefault("func", "mod.f")
    return Task(id=task_id, created_at=NOW - timedelta(seconds=seconds_ago), **fields)


def worker(worker_id: str, started_ago: float) -> WorkerInfo:
    return make_worker(id=worker_id, started_at=NOW - timedelta(seconds=started_ago))


# -- the cursor ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["0191b2c3d4e5f60718293a4b5c6d7e8f", "with:colons:inside", "x"])
@pytest.mark.parametrize(
    "created_at",
    [NOW, datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(1960, 5, 1, 0, 0, 0, 1, tzinfo=timezone.utc)],
)
def test_cursor_round_trip(created_at: datetime, task_id: str) -> None:
    assert decode_cursor(page_cursor(created_at, task_id)) == (created_at, task_id)


def test_cursor_of_another_timezone_is_the_same_instant() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert page_cursor(local, "a") == page_cursor(NOW, "a")
    assert decode_cursor(page_cursor(local, "a"))[0] == NOW


@pytest.mark.parametrize("cursor", ["", "abc", "123", "123:", ":abc", "1.5:abc", "x1:abc", "9" * 40 + ":abc"])
def test_bad_cursor_is_a_configuration_error(cursor: str) -> None:
    with pytest.raises(ConfigurationError, match="not a page cursor"):
        decode_cursor(cursor)


def test_bad_cursor_in_a_query_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        select_page([task("a")], TaskQuery(after="nonsense"))


# -- the default page ----------------------------------------------------------------------------------


def test_select_page_filters_orders_and_limits() -> None:
    tasks = [
        task("a", 40, queue="q1"),
        task("b", 30, queue="q2", func="mod.g"),
        task("c", 20, queue="q1", status=TaskStatus.FAILED),
        task("d", 10, queue="q1"),
        task("e", 10, queue="q2"),
    ]

    def ids(**filters: Any) -> list[str]:
        return [t.id for t in select_page(tasks, TaskQuery(**filters))]

    assert ids() == ["e", "d", "c", "b", "a"]  # newest first, equal created_at by id descending
    assert ids(limit=2) == ["e", "d"]
    assert ids(queue="q1") == ["d", "c", "a"]
    assert ids(func="mod.g") == ["b"]
    assert ids(status=TaskStatus.FAILED) == ["c"]
    assert ids(status=TaskStatus.PENDING, queue="q2") == ["e", "b"]
    since, until = NOW - timedelta(seconds=30), NOW - timedelta(seconds=10)
    assert ids(since=since, until=until) == ["c", "b"]  # since inclusive, until exclusive
    assert ids(since=until) == ["e", "d"]


def test_select_page_keyset_cursor() -> None:
    tasks = [task(f"t{i}", 100 - i) for i in range(6)] + [task("t4b", 96)]
    first = select_page(tasks, TaskQuery(limit=3))
    assert [t.id for t in first] == ["t5", "t4b", "t4"]
    after = page_cursor(first[-1].created_at, first[-1].id)
    later = [*tasks, task("new", 0), task("s4", 96)]  # one newer, one tied with the cursor and a smaller id
    assert [t.id for t in select_page(later, TaskQuery(limit=10, after=after))] == ["s4", "t3", "t2", "t1", "t0"]
    gone = page_cursor(NOW - timedelta(seconds=97.5), "zz")  # the cursor's own task need not exist
    assert [t.id for t in select_page(tasks, TaskQuery(after=gone))] == ["t2", "t1", "t0"]


# -- the default statistics ----------------------------------------------------------------------------


def finished(task_id: str, at: datetime, status: TaskStatus = TaskStatus.SUCCEEDED, queue: str = "q") -> Task:
    return task(task_id, 7200, status=status, finished_at=at, queue=queue)


def test_stats_of_buckets_completions_by_minute() -> None:
    start = NOW.replace(second=0, microsecond=0) - timedelta(minutes=THROUGHPUT_MINUTES - 1)  # 11:31:00
    tasks = [
        finished("now", NOW),
        finished("this-minute", NOW.replace(second=0, microsecond=0)),
        finished("last-minute", NOW.replace(second=0, microsecond=0) - timedelta(microseconds=1)),
        finished("failed", NOW - timedelta(minutes=2), TaskStatus.FAILED),
        finished("first-bucket", start),
        finished("too-old", start - timedelta(microseconds=1)),
        finished("future", NOW + timedelta(seconds=1)),
        finished("cancelled", NOW, TaskStatus.CANCELLED),
        finished("expired", NOW, TaskStatus.EXPIRED),
    ]
    [entry] = stats_of(tasks, NOW)
    per_minute = entry.completed_per_minute
    assert len(per_minute) == THROUGHPUT_MINUTES
    assert (per_minute[-1], per_minute[-2], per_minute[-3], per_minute[0]) == (2, 1, 1, 1)
    assert sum(per_minute) == 5
    assert entry.counts == {"pending": 0, "running": 0, "succeeded": 6, "failed": 1, "cancelled": 1, "expired": 1}


def test_stats_of_counts_ages_and_sorts() -> None:
    tasks = [
        task("ready", 100, queue="b"),
        task("due", 5, queue="b", eta=NOW - timedelta(seconds=50)),
        task("paused", 1000, queue="b", paused=True),
        task("later", 1000, queue="b", eta=NOW + timedelta(hours=1)),
        task("running", 2000, queue="b", status=TaskStatus.RUNNING),
        task("only-later", 1000, queue="a", eta=NOW + timedelta(hours=1)),
        task("c", 0, queue="c", status=TaskStatus.FAILED),
    ]
    a, b, c = stats_of(tasks, NOW)
    assert [a.queue, b.queue, c.queue] == ["a", "b", "c"]
    assert b.oldest_ready_age == pytest.approx(100.0)
    assert a.oldest_ready_age is None and c.oldest_ready_age is None
    assert b.counts["pending"] == 4 and b.counts["running"] == 1 and set(b.counts) == {s.value for s in TaskStatus}
    assert c.counts["failed"] == 1 and c.completed_per_minute == [0] * THROUGHPUT_MINUTES  # no finished_at
    assert stats_of([], NOW) == []


# -- retry's reset -------------------------------------------------------------------------------------


def test_reset_for_retry() -> None:
    failed = task(
        "t",
        60,
        status=TaskStatus.FAILED,
        eta=NOW - timedelta(seconds=30),
        paused=True,
        attempts=3,
        max_retries=2,
        error=TaskError(type="E", message="m"),
        started_at=NOW - timedelta(seconds=20),
        finished_at=NOW - timedelta(seconds=10),
        worker_id="w",
        lease_token="tok",
        lease_expires_at=NOW,
        unique_key="k",
        headers={"traceparent": "x"},
        payload=b"\x01p",
        interval=60.0,
    )
    fresh = reset_for_retry(failed, NOW)
    assert (fresh.status, fresh.eta, fresh.paused, fresh.attempts) == (TaskStatus.PENDING, None, False, 0)
    assert (fresh.error, fresh.started_at, fresh.finished_at, fresh.worker_id) == (None, None, None, None)
    assert (fresh.lease_token, fresh.lease_expires_at, fresh.updated_at) == (None, None, NOW)
    kept = ("id", "func", "payload", "created_at", "unique_key", "headers", "max_retries", "interval")
    assert all(getattr(fresh, name) == getattr(failed, name) for name in kept)
    assert failed.status is TaskStatus.FAILED  # a copy: the original is untouched


# -- the local registry --------------------------------------------------------------------------------


def test_local_workers_register_refresh_expire_unregister() -> None:
    registry = LocalWorkers()
    young, old, stale = worker("young", 5), worker("old", 50), worker("stale", 100)
    registry.register(young, 60)
    registry.register(old, 60)
    registry.register(stale, 0)  # expires at once
    assert registry.live() == [old, young]
    assert "stale" not in registry._entries  # an expired entry is dropped when read
    registry.register(old, -1)  # a refresh replaces the entry, expiry included
    assert registry.live() == [young]
    registry.unregister("young")
    registry.unregister("unknown")
    assert registry.live() == []
