"""Child process for the SQLite multi-process tests (run as a script, not collected).

Usage: python sqlite_child.py <command> <url> [args...]; prints one JSON line as its result.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable

import anyio

from omniq.models import Outcome, OutcomeKind
from omniq_sqlite import SQLiteResultStorage, SQLiteTaskQueue


async def claim(url: str, batch: str) -> None:
    """Claim and finish until the queue stays empty; print the claimed ids."""
    claimed: list[str] = []
    async with SQLiteTaskQueue(url) as queue:
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()  # start together with the sibling processes
        empty = 0
        while empty < 3:
            tasks = await queue.claim_ready(["default"], int(batch), lease=60, worker_id="child")
            if not tasks:
                empty += 1
                await anyio.sleep(0.01)
                continue
            empty = 0
            claimed.extend(task.id for task in tasks)
            outcomes = [
                Outcome(task_id=t.id, lease_token=t.lease_token or "", kind=OutcomeKind.SUCCEEDED) for t in tasks
            ]
            flags = await queue.finish(outcomes)
            assert all(flags), flags
    print(json.dumps({"claimed": claimed}), flush=True)


async def migrate(url: str) -> None:
    """Open the database (running migrations) and close it."""
    sys.stdin.readline()
    async with SQLiteTaskQueue(url):
        pass
    print(json.dumps({"ok": True}), flush=True)


async def wait_work(url: str) -> None:
    """Wait for work with a 30 s poll fallback; print how long it took."""
    async with SQLiteTaskQueue(url) as queue:
        await queue.wait_for_work(["default"], 0.01)  # binds this process's hint socket
        print(json.dumps({"ready": True}), flush=True)
        start = time.monotonic()
        await queue.wait_for_work(["default"], 30.0)
        elapsed = time.monotonic() - start
        tasks = await queue.claim_ready(["default"], 10, lease=30, worker_id="child")
    print(json.dumps({"elapsed": elapsed, "claimed": [t.id for t in tasks]}), flush=True)


async def wait_result(url: str, task_id: str) -> None:
    """Wait for a result with a 30 s poll fallback; print how long it took."""
    async with SQLiteResultStorage(url, wait_poll=30.0) as results:
        await results.wait("warm-up", 0.01)  # binds this process's hint socket
        print(json.dumps({"ready": True}), flush=True)
        start = time.monotonic()
        result = await results.wait(task_id, 30.0)
    print(json.dumps({"elapsed": time.monotonic() - start, "found": result is not None}), flush=True)


COMMANDS: dict[str, Callable[..., Awaitable[None]]] = {
    "claim": claim,
    "migrate": migrate,
    "wait_work": wait_work,
    "wait_result": wait_result,
}

if __name__ == "__main__":
    anyio.run(COMMANDS[sys.argv[1]], *sys.argv[2:])
