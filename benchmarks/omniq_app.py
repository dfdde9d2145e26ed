"""The OmniQ app the benchmark's worker processes load: ``omniq worker omniq_app:app`` (cwd = benchmarks/).

Settings come from the environment (OMNIQ_BACKEND, OMNIQ_URL, OMNIQ_BASE_DIR, OMNIQ_KEY_PREFIX) and are
otherwise OmniQ's defaults: results and events are stored.
"""

from __future__ import annotations

from common import count_noop, report_ping

from omniq import AsyncOmniQ

app = AsyncOmniQ()


@app.task(name="noop")
async def noop() -> None:
    """The no-op job (plus a counter that ends the drain measurement)."""
    count_noop()


@app.task(name="ping")
async def ping(seq: int) -> None:
    """The latency job: reports its start time."""
    report_ping(seq)
