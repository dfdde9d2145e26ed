"""Contract-level throughput and latency of the SQLite backend (no worker, no serializer).

    python benchmarks/sqlite_contract_bench.py [--tasks 10000] [--batch 100]

Measures: enqueue_many of N tasks; draining them with claim_ready(batch) +
finish(fused results) + one event batch per claim (started + succeeded
events, plus the enqueued events at enqueue time); and enqueue-to-claim
latency with the claiming worker in another process (woken by the
cross-process hint, not by polling).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import anyio

from omniq.models import EventType, Outcome, OutcomeKind, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq_sqlite import SQLiteEventStorage, SQLiteResultStorage, SQLiteTaskQueue


def ordered_id() -> str:
    """A time-ordered id (nanoseconds + random), like a UUIDv7: B-tree inserts append instead of scattering."""
    return f"{time.time_ns():016x}{os.urandom(8).hex()}"


async def throughput(url: str, n: int, batch: int, events: bool, ordered: bool = False) -> dict[str, float]:
    make_id = ordered_id if ordered else (lambda: os.urandom(16).hex())  # random = what omniq.models.new_id() gives
    async with SQLiteTaskQueue(url) as q, SQLiteResultStorage(url) as r, SQLiteEventStorage(url) as ev:
        tasks = [Task(id=make_id(), func="bench.noop", payload=b"\x01\x90") for _ in range(n)]
        start = time.perf_counter()
        for i in range(0, n, 1000):
            chunk = tasks[i : i + 1000]
            await q.enqueue_many(chunk)
            if events:
                await ev.append([TaskEvent(task_id=t.id, type=EventType.ENQUEUED, func=t.func) for t in chunk])
        enqueued = time.perf_counter() - start
        start = time.perf_counter()
        done = 0
        while True:
            claimed = await q.claim_ready(["default"], batch, lease=30, worker_id="bench")
            if not claimed:
                break
            now = utcnow()
            outcomes = [
                Outcome(
                    task_id=t.id,
                    lease_token=t.lease_token or "",
                    kind=OutcomeKind.SUCCEEDED,
                    result=TaskResult(
                        task_id=t.id,
                        status=TaskStatus.SUCCEEDED,
                        payload=b"\x01\xc0",
                        attempts=t.attempts,
                        func=t.func,
                        started_at=t.started_at,
                        finished_at=now,
                    ),
                )
                for t in claimed
            ]
            flags = await q.finish(outcomes, results=r)
            assert all(flags)
            if events:
                batch_events = [
                    TaskEvent(task_id=t.id, type=EventType.STARTED, func=t.func, attempt=1) for t in claimed
                ]
                batch_events += [
                    TaskEvent(task_id=t.id, type=EventType.SUCCEEDED, func=t.func, attempt=1) for t in claimed
                ]
                await ev.append(batch_events)
            done += len(claimed)
        drained = time.perf_counter() - start
        assert done == n, done
        assert await r.get(tasks[-1].id) is not None
    return {
        "enqueue_per_s": n / enqueued,
        "drain_per_s": n / drained,
        "end_to_end_per_s": n / (enqueued + drained),
    }


CHILD = r"""
import sys, time, json, anyio
from omniq_sqlite import SQLiteTaskQueue
async def main(url, n):
    async with SQLiteTaskQueue(url) as q:
        await q.wait_for_work(["lat"], 0.01)
        print("ready", flush=True)
        got = []
        while len(got) < n:
            for t in await q.claim(["lat"], 10, lease=30, worker_id="lat", wait=30.0):
                got.append((t.id, time.time()))
        print(json.dumps(got), flush=True)
anyio.run(main, sys.argv[1], int(sys.argv[2]))
"""


async def latency(url: str, n: int) -> dict[str, float]:
    popen = functools.partial(
        subprocess.Popen, [sys.executable, "-c", CHILD, url, str(n)], stdout=subprocess.PIPE, text=True
    )
    proc = await anyio.to_thread.run_sync(popen)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        sent: dict[str, float] = {}
        async with SQLiteTaskQueue(url) as q:
            for i in range(n):
                task = Task(id=f"lat-{i}", func="bench.noop", queue="lat")
                sent[task.id] = time.time()
                await q.enqueue(task)
                await anyio.sleep(0.02)  # one task at a time: the worker is idle when it arrives
        got = json.loads(await anyio.to_thread.run_sync(proc.stdout.readline))
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    delays = sorted((claimed - sent[task_id]) * 1000 for task_id, claimed in got)
    return {
        "p50_ms": statistics.median(delays),
        "p90_ms": delays[int(len(delays) * 0.9)],
        "max_ms": delays[-1],
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--latency-samples", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        with_events = await throughput(url, args.tasks, args.batch, events=True)
        print(f"with results+events : {json.dumps({k: round(v) for k, v in with_events.items()})}")
        url2 = f"sqlite:///{tmp}/bench2.db"
        no_events = await throughput(url2, args.tasks, args.batch, events=False)
        print(f"with results only   : {json.dumps({k: round(v) for k, v in no_events.items()})}")
        ordered = await throughput(f"sqlite:///{tmp}/bench3.db", args.tasks, args.batch, events=True, ordered=True)
        print(f"results+events, time-ordered ids: {json.dumps({k: round(v) for k, v in ordered.items()})}")
        lat = await latency(f"sqlite:///{tmp}/lat.db", args.latency_samples)
        print(f"enqueue->claim, worker in another process: {json.dumps({k: round(v, 2) for k, v in lat.items()})}")


if __name__ == "__main__":
    anyio.run(main)
