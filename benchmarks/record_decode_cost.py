"""What strict record decoding adds per claimed task: the checked read beside the bare one.

    python benchmarks/record_decode_cost.py

For a claimed SQLite row and a claimed Redis script row, times the backend's
bare builder (``_build_task``) and the read a claim really does (strict
check, salvage on failure: ``_leased_row_to_task`` / ``leased_task_from_row``);
for a blob, ``decode_task`` (its checks are msgspec constraints of the field
types, so there is no unchecked twin to compare: compare against an older
tree with PYTHONPATH). CPU time (``time.process_time``), the minimum of 30
rounds of 5,000 calls, so that other work on a shared machine barely shows.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
import timeit
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio

import omniq_redis._codec as redis_codec
import omniq_sqlite.task_queue as sqlite_queue
from omniq.models import Task, TaskError, decode_task, encode_task, utcnow

CALLS, ROUNDS = 5_000, 30


def _task() -> Task:
    now = utcnow()
    return Task(
        id="0" * 32,
        func="app.tasks:noop",
        payload=b"\x07msgpack\x92\x90\x80",
        eta=now,
        timeout=30.0,
        result_ttl=3600.0,
        expires_at=now + timedelta(hours=1),
        created_at=now,
        depends_on=("a" * 32,),
        error=TaskError(type="X", message="m"),
    )


def _sqlite_row(task: Task) -> tuple[Any, ...]:
    """The row a claim of ``task`` returns, read back from a real database."""
    path = os.path.join(tempfile.mkdtemp(), "decode-cost.db")

    async def claim() -> None:
        async with sqlite_queue.SQLiteTaskQueue(f"sqlite:///{path}") as queue:
            await queue.enqueue(task)
            await queue.claim_ready(["default"], 1, lease=30, worker_id="w")

    anyio.run(claim)
    with sqlite3.connect(path) as conn:
        row: tuple[Any, ...] = conn.execute(f"SELECT {sqlite_queue.schema.TASK_COLUMNS} FROM omniq_tasks").fetchone()
    return row


def _ns(calls: list[Callable[[], object]]) -> list[float]:
    """Each call's best round; the rounds of all calls interleave, so a busy spell hits them alike."""
    timers = [timeit.Timer(call, timer=time.process_time) for call in calls]
    best = [float("inf")] * len(calls)
    for _ in range(ROUNDS):
        for i, timer in enumerate(timers):
            best[i] = min(best[i], timer.timeit(CALLS))
    return [seconds / CALLS * 1e9 for seconds in best]


def main() -> None:
    task = _task()
    blob = encode_task(task)
    row = _sqlite_row(task)
    redis_row = [blob, b"running", None, None, b"1", b"tok", b"1700000000000000", b"w", b"1700000000000000"]
    redis_row += [None, None, b""]
    cases = [
        ("blob: decode_task (checked by msgspec)", lambda: decode_task(blob), None),
        ("sqlite row: bare _build_task", lambda: sqlite_queue._build_task(row), None),
        ("sqlite row: claim's _leased_row_to_task", lambda: sqlite_queue._leased_row_to_task(row), 1),
        ("redis row: bare _build_task", lambda: redis_codec._build_task(redis_row), None),
        ("redis row: claim's leased_task_from_row", lambda: redis_codec.leased_task_from_row(redis_row), 3),
    ]
    times = _ns([call for _, call, _ in cases])
    for (name, _, bare), spent in zip(cases, times, strict=True):
        extra = f"  (+{spent - times[bare]:.0f} ns)" if bare is not None else ""
        print(f"{name:45} {spent:7.0f} ns{extra}")


if __name__ == "__main__":
    main()
