"""The sync enqueue's Redis transport (omniq_redis.blocking) against redis-py's own client, A/B in one process.

    python benchmarks/redis_blocking_cost.py [rounds] [calls]      # default 5 rounds of 5,000

Each round times ``calls`` sync ``OmniQ.enqueue`` calls (the whole call: task
build, script, event buffering) with the app's ``BlockingCalls`` and then with
the same object's scripts sent through a ``redis.Redis`` client (its pool,
``evalsha``, its reply reader) instead; same scripts, same server, same
process. Prints medians and ranges of the wall and CPU µs per call.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from typing import Any

import redis
from redis import exceptions as rexc

from omniq import OmniQ, Settings
from omniq_redis.scripts import SCRIPTS

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


class RedisPyScripts:
    """``BlockingCalls.run`` / ``run_many`` through redis-py's client (what the module replaces)."""

    def __init__(self) -> None:
        self.client = redis.Redis.from_url(URL)

    def run(self, name: str, args: Any, keys: Any = ()) -> Any:
        script = SCRIPTS[name]
        try:
            return self.client.evalsha(script.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            self.client.script_load(script.source)
            return self.client.evalsha(script.sha, len(keys), *keys, *args)

    def run_many(self, calls: Any) -> list[Any]:
        return [self.run(name, args) for name, args in calls]


def timed(enqueue: Any, calls: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        enqueue()
    return (time.perf_counter() - wall) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    figures: dict[str, list[tuple[float, float]]] = {"omniq_redis.blocking": [], "redis-py client": []}
    with OmniQ(Settings(backend="redis", url=URL, key_prefix=prefix)) as app:
        handle = app.task(name="noop", queue="blocking-cost")(lambda: None)
        client = app.async_app.task_queue._connection.current  # type: ignore[attr-defined]
        ours, theirs = client.blocking, RedisPyScripts()
        for _ in range(300):
            handle.enqueue()
        for _ in range(rounds):
            for label, transport in (("omniq_redis.blocking", ours), ("redis-py client", theirs)):
                client.blocking = transport
                figures[label].append(timed(handle.enqueue, calls))
        client.blocking = ours
        app.purge(queue="blocking-cost")
    print(f"# python benchmarks/redis_blocking_cost.py {rounds} {calls}")
    print("| transport | wall µs per enqueue | CPU µs per enqueue |")
    print("| --- | --- | --- |")
    for label, values in figures.items():
        cells = []
        for index in (0, 1):
            series = [v[index] for v in values]
            cells.append(f"{statistics.median(series):.1f} [{min(series):.1f}-{max(series):.1f}]")
        print(f"| {label} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
