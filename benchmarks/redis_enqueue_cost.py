"""Where the time of one Redis enqueue goes: server work per call, against a PING and an empty script.

    OMNIQ_BACKEND=redis python benchmarks/redis_enqueue_cost.py [--calls 2000] [--rounds 5]

For each kind of call, made one at a time through OmniQ's own connection, it prints the median over
the rounds of: the wall time per call, the server's CPU per call (``INFO cpu``, which includes
reading the request and writing the reply) and the time spent in scripts (``INFO commandstats``
for EVALSHA; for the whole enqueue call it includes its share of the event flushes). The kinds:

- ``PING``: the round trip itself;
- ``EVALSHA return 1``: the round trip plus the fixed cost of any script;
- ``enqueue script``: the general enqueue script alone (any task, any number), its arguments built
  beforehand;
- ``enqueue_one script``: the script of the common single enqueue alone (what ``enqueue`` runs for a
  plain task once its queue is registered), its arguments built during the call;
- ``AsyncOmniQ.enqueue``: the whole call (building the task, the script, the buffered event and its
  share of the event flushes).

Run it on an otherwise idle machine; it writes under the key prefix ``omniq_cost`` and purges it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

os.environ.setdefault("OMNIQ_BACKEND", "redis")
os.environ["OMNIQ_KEY_PREFIX"] = "omniq_cost"

from omniq import AsyncOmniQ
from omniq.models import Task, new_id, utcnow
from omniq_redis._codec import enqueue_items, enqueue_one_args
from omniq_redis.scripts import SCRIPTS

app = AsyncOmniQ()


@app.task(name="noop")
async def noop() -> None:
    """Never runs: only enqueued."""


async def main(calls: int, rounds: int) -> None:
    async with app:
        await app.purge()
        await noop.enqueue()  # registers the queue
        queue = app.task_queue
        client = queue._connection.current  # the components' own connection: the path enqueue takes
        lane = client.lane
        assert lane is not None, "this configuration has no lane (credential provider or RESP3)"
        redis = client.redis
        empty = await redis.script_load("return 1")
        items: list[bytes] = []
        tasks: list[Task] = []

        async def ping() -> None:
            await lane.call("PING")

        async def empty_script() -> None:
            await lane.call("EVALSHA", empty, 0)

        async def enqueue_script() -> None:  # the queue is registered already: as in a client's steady state
            await lane.call("EVALSHA", SCRIPTS["enqueue"].sha, 0, queue.prefix, "default", items.pop(), "0")

        async def enqueue_one_script() -> None:
            task = tasks.pop()
            qk = queue._keys("default")
            task_keys = (queue._index_key, qk.task(task.id), qk.pending, qk.ready, qk.signal)
            await lane.call("EVALSHA", SCRIPTS["enqueue_one"].sha, len(task_keys), *task_keys, *enqueue_one_args(task))

        async def enqueue() -> None:
            await noop.enqueue()

        kinds: dict[str, Callable[[], Awaitable[None]]] = {
            "PING": ping,
            "EVALSHA return 1": empty_script,
            "enqueue script": enqueue_script,
            "enqueue_one script": enqueue_one_script,
            "AsyncOmniQ.enqueue": enqueue,
        }
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in kinds}
        for _ in range(rounds):
            for name, call in kinds.items():  # interleaved, so a noisy spell hits every kind
                tasks[:] = [
                    Task(id=new_id(), func="noop", payload=b"\x92\x90\x80", created_at=utcnow()) for _ in range(calls)
                ]
                items[:] = [enqueue_items([task]) for task in tasks]
                await redis.config_resetstat()
                cpu = await _server_cpu(redis)
                start = time.perf_counter()
                for _ in range(calls):
                    await call()
                await app.flush_events()
                wall = time.perf_counter() - start
                cpu = await _server_cpu(redis) - cpu
                stats = await redis.info("commandstats")
                script = stats.get("cmdstat_evalsha", {}).get("usec", 0)
                figures[name].append((wall / calls * 1e6, cpu / calls * 1e6, script / calls))
            await app.purge()
        print(f"{calls} calls x {rounds} rounds; medians in µs per call")
        print(f"{'call':22} {'wall':>8} {'server CPU':>11} {'script time':>12}")
        for name, rows in figures.items():
            wall, cpu, script = (statistics.median(column) for column in zip(*rows, strict=True))
            print(f"{name:22} {wall:8.1f} {cpu:11.1f} {script:12.1f}")


async def _server_cpu(redis: object) -> float:
    info = await redis.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
