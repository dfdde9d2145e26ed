"""A result storage on another engine goes away while a task finishes: its return value is kept, not lost.

The queue (SQLite) accepts the outcome first; the result write to Redis,
reached through a proxy that refuses connections, fails. The worker keeps
the result and writes it once Redis answers again, instead of sending the
outcome through ``finish`` once more (the queue would refuse it, and the
value would be lost).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from omniq import AsyncOmniQ, Settings, TaskStatus
from omniq.testing.faults import TcpProxy

from .conftest import drop_server_data

pytestmark = [pytest.mark.anyio, pytest.mark.servers]


async def test_a_result_written_during_an_outage_arrives_after_it(redis_url: str, tmp_path: Path) -> None:
    prefix = f"omniq-test-{uuid.uuid4().hex[:12]}"
    proxy = TcpProxy(redis_url, 6379)
    await proxy.start()
    settings = Settings(
        backend="sqlite",
        base_dir=tmp_path / "data",
        result_storage_type="redis",
        result_storage_url=proxy.url,
        key_prefix=prefix,
    )
    try:
        async with AsyncOmniQ(settings) as app:
            app.register(lambda x: x * 2, name="double")
            worker = app.worker(concurrency=2)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.start)
                await proxy.stop()  # Redis is away: the result write will fail
                task_id = await app.enqueue("double", 21)
                with anyio.fail_after(30):  # the queue's record (app.get_task would read progress from Redis)
                    while (
                        task := await app.task_queue.get(task_id)
                    ) is None or task.status is not TaskStatus.SUCCEEDED:
                        await anyio.sleep(0.05)
                await anyio.sleep(0.5)  # the write was tried, and failed
                await proxy.start()
                result = await app.get_result(task_id, wait=True, timeout=30)
                assert result is not None and result.status is TaskStatus.SUCCEEDED and result.result == 42
                await worker.stop()
    finally:
        await proxy.stop()
        await drop_server_data("redis", redis_url, prefix)
