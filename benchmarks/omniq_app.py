"""The OmniQ app the benchmark's worker processes load: ``omniq worker omniq_app:app`` (cwd = benchmarks/).

Settings come from the environment (OMNIQ_BACKEND, OMNIQ_URL, OMNIQ_BASE_DIR, OMNIQ_KEY_PREFIX) and are
otherwise OmniQ's defaults: results and events are stored.
"""

from __future__ import annotations

import asyncio

from common import count_noop, report_ping

from omniq import AsyncOmniQ

app = AsyncOmniQ()


@app.task(name="noop")
async def noop() -> None:
    """The no-op job (plus a counter that ends the drain measurement)."""
    count_noop()


@app.task(name="spin")
async def spin(loops: int) -> int:
    """A CPU-bound job: ``loops`` turns of a pure-Python loop (20,000 take about 1 ms here), with the
    event loop held, as a task that computes holds it. The workload a second worker process is for."""
    total = 0
    for i in range(loops):
        total += i * i
    return total


@app.task(name="nap")
async def nap(ms: float) -> None:
    """A job that waits ``ms`` milliseconds without holding the event loop (an API call, a query)."""
    await asyncio.sleep(ms / 1000)


@app.task(name="ping")
async def ping(seq: int) -> None:
    """The latency job: reports its start time."""
    report_ping(seq)


@app.task(name="count_values")
async def count_values(values: list[object]) -> int:
    """A chord's callback (workflows.py): how many results it received."""
    return len(values)
