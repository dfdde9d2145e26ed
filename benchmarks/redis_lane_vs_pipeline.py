"""Is omniq-redis's own protocol lane worth keeping? The same hot paths with it and through redis-py.

    .venv/bin/python benchmarks/redis_lane_vs_pipeline.py [--single 2000] [--drain 5000] [--rounds 5]

Two figures, each measured both ways in the same process, A/B interleaved per round (the order
alternates) so a noisy spell on a shared machine hits both:

- ``enqueue µs/call``: N sequential ``AsyncOmniQ`` enqueue calls of a no-op task (the buffered
  *enqueued* events flushed inside the timing);
- ``enqueue CPU µs``: the same calls' CPU time in this process per call (the client's own work, which
  the lane exists to cut; less sensitive to other load on the machine than the wall time);
- ``drain tasks/s``: N queued no-op tasks run by an in-process burst worker (OmniQ's default
  concurrency; claims, fused finishes with results, events), from ``run_worker`` start to return.

``lane``: the components' own connection (``omniq_redis.lane``) runs sequential calls; ``redis-py``:
the same components with the lane switched off, so every call goes through redis-py's own API
(``evalsha`` / ``execute_command`` on pooled connections, ``pipeline``). Prints each figure's median
and range over the rounds and the lane's gain. It writes under a fresh key prefix and deletes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

os.environ.setdefault("OMNIQ_BACKEND", "redis")
os.environ["OMNIQ_KEY_PREFIX"] = f"omniq_lane_{uuid.uuid4().hex[:8]}"

import redis.asyncio as aioredis

from omniq import AsyncOmniQ

app = AsyncOmniQ()


@app.task(name="noop")
async def noop() -> None:
    """The no-op job."""


async def _set_lane(enabled: bool) -> None:
    """Switch the lane of every Redis client the app's components hold on or off."""
    for component in (app.task_queue, app.result_storage, app.event_storage):
        for name in ("_connection", "_blocking"):
            connection = getattr(component, name, None)
            if connection is not None:
                (await connection.client()).use_lane(enabled)


async def _enqueue(n: int) -> tuple[float, float]:
    """Wall and this process's CPU time per call, in µs."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await noop.enqueue()
    await app.flush_events()
    return (time.perf_counter() - start) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def _drain(n: int) -> float:
    await app.enqueue_many(noop, [() for _ in range(n)])
    await app.flush_events()
    start = time.perf_counter()
    await app.run_worker(burst=True)
    return n / (time.perf_counter() - start)


async def main(single: int, drain: int, rounds: int) -> None:
    figures: dict[tuple[str, str], list[float]] = {}
    async with app:
        await app.purge()
        await noop.enqueue()  # registers the queue, loads the scripts
        await app.purge()
        for round_ in range(rounds):
            modes = ("lane", "redis-py") if round_ % 2 == 0 else ("redis-py", "lane")
            for mode in modes:
                await _set_lane(mode == "lane")
                wall, cpu = await _enqueue(single)
                figures.setdefault(("enqueue µs/call", mode), []).append(wall)
                figures.setdefault(("enqueue CPU µs", mode), []).append(cpu)
                await app.purge()
                figures.setdefault(("drain tasks/s", mode), []).append(await _drain(drain))
                await app.purge()
        await app.purge()
    await _clean()
    for (figure, mode), values in figures.items():
        print(f"# {figure} {mode}: " + " ".join(f"{value:.1f}" for value in values))
    print(f"{rounds} rounds, A/B interleaved; single {single}, drain {drain}; median [min-max]")
    for figure in ("enqueue µs/call", "enqueue CPU µs", "drain tasks/s"):
        lane, plain = figures[(figure, "lane")], figures[(figure, "redis-py")]
        gain = statistics.median(plain) / statistics.median(lane) - 1
        if figure.startswith("drain"):
            gain = statistics.median(lane) / statistics.median(plain) - 1
        print(f"{figure:16} lane {_fmt(lane)}  redis-py {_fmt(plain)}  lane better by {gain:+.0%}")


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


async def _clean() -> None:
    client = aioredis.Redis.from_url(os.environ.get("OMNIQ_URL", "redis://127.0.0.1:6379/0"))
    try:
        doomed = [key async for key in client.scan_iter(match=f"*{os.environ['OMNIQ_KEY_PREFIX']}*", count=1000)]
        if doomed:
            await client.unlink(*doomed)
    finally:
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--drain", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.single, args.drain, args.rounds))
