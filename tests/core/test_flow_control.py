"""Flow control through the app: the options, their errors, per-key limits, the refusal of a backend
without the capability, queue pause, and a real worker pool under a concurrency limit (memory engine).

The engine-side rules are the conformance suite's (``omniq.testing.task_queue.flow_control``); the
fault tests run them through worker processes on every multi-process engine.
"""

from __future__ import annotations

import time
from typing import ClassVar

import anyio
import pytest

from omniq import AsyncOmniQ, ConfigurationError, NotSupportedError, OmniQ, TaskStatus
from omniq.backends.memory import MemoryStore, MemoryTaskQueue
from omniq.base import BaseTaskQueue, Capability
from omniq.flow_control import Limits, claim_share, make_limits, parse_rate

pytestmark = pytest.mark.anyio


class LegacyQueue(MemoryTaskQueue):
    """A task queue written before flow control: no capability, the contract's defaults."""

    capabilities: ClassVar[frozenset[str]] = MemoryTaskQueue.capabilities - {
        Capability.FLOW_CONTROL,
        Capability.QUEUE_PAUSE,
    }
    set_queue_paused = BaseTaskQueue.set_queue_paused
    paused_queues = BaseTaskQueue.paused_queues


@pytest.mark.parametrize(
    ("spec", "per_second"), [("100/s", 100.0), ("30/m", 0.5), ("7200/h", 2.0), ("2.5/s", 2.5), (" 10 / min ", 10 / 60)]
)
def test_rates_are_parsed_per_second(spec: str, per_second: float) -> None:
    assert parse_rate(spec) == pytest.approx(per_second)


@pytest.mark.parametrize("spec", ["100/x", "100", "0/s", "-5/s", "/s", "fast", 100, None, "1e3/s"])
def test_bad_rates_are_refused_with_a_clear_error(spec: object) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit"):
        parse_rate(spec)


@pytest.mark.parametrize(("concurrency", "share"), [(1, 1), (3, 3), (4, 2), (5, 3), (50, 25), (51, 26)])
def test_one_claim_takes_half_of_a_limit_of_four_or_more(concurrency: int, share: int) -> None:
    assert claim_share(concurrency) == share


def test_the_burst_defaults_to_the_per_second_rate() -> None:
    assert make_limits("t", rate_limit="100/s") == Limits(key="t", rate=100.0, burst=100)
    assert make_limits("t", rate_limit="30/m") == Limits(key="t", rate=0.5, burst=1)
    assert make_limits("t", rate_limit="10/s", rate_burst=3) == Limits(key="t", rate=10.0, burst=3)
    assert make_limits("t") is None


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency_limit": 0},
        {"concurrency_limit": -1},
        {"concurrency_limit": True},
        {"concurrency_limit": 2.5},
        {"rate_limit": "100/x"},
        {"rate_limit": "10/s", "rate_burst": 0},
        {"rate_burst": 5},
        {"limit_key": 42, "concurrency_limit": 1},
    ],
)
def test_bad_limits_fail_at_registration(options: dict[str, object]) -> None:
    app = AsyncOmniQ(backend="memory")
    with pytest.raises(ConfigurationError):

        @app.task(**options)  # type: ignore[call-overload]
        async def job() -> None: ...


async def test_bad_limits_fail_at_enqueue_and_store_nothing() -> None:
    async with AsyncOmniQ(backend="memory", url="limits-bad") as app:

        @app.task
        async def job(n: int) -> int:
            return n

        with pytest.raises(ConfigurationError, match="rate_limit"):
            await app.enqueue(job, 1, rate_limit="5/fortnight")
        with pytest.raises(ConfigurationError, match="limit_key is given without"):
            await app.enqueue(job, 1, limit_key="k")
        with pytest.raises(ConfigurationError, match="limit_key gave"):
            await job.options(concurrency_limit=1, limit_key=lambda n: n).enqueue(1)
        with pytest.raises(ConfigurationError, match="limit_key could not be called with the task's arguments"):
            await job.options(concurrency_limit=1, limit_key=lambda: "k").enqueue(1)
        assert await app.count_tasks() == 0


async def test_limits_are_keyed_by_task_name_or_per_call_key() -> None:
    async with AsyncOmniQ(backend="memory", url="limits-keys") as app:

        @app.task(name="mail.send", concurrency_limit=2)
        async def send(customer: str) -> str:
            return customer

        plain = await app.get_task(await send.enqueue("c1"))
        assert plain is not None and plain.limits == Limits(key="mail.send", concurrency=2)
        ids = await app.enqueue_many(send, [("c1",), ("c2",)], limit_key=lambda customer: customer, rate_limit="10/s")
        tasks = [await app.get_task(task_id) for task_id in ids]
        assert [t.limits for t in tasks if t is not None] == [
            Limits(key="mail.send|c1", concurrency=2, rate=10.0, burst=10),
            Limits(key="mail.send|c2", concurrency=2, rate=10.0, burst=10),
        ]
        fixed = await app.get_task(await app.enqueue(send, "c3", limit_key="tenant-9"))
        assert fixed is not None and fixed.limits is not None and fixed.limits.key == "mail.send|tenant-9"
        unlimited = await app.get_task(await app.enqueue("other", 1))
        assert unlimited is not None and unlimited.limits is None


async def test_a_backend_without_the_capability_refuses_limited_tasks_and_pausing() -> None:
    store = MemoryStore()
    async with AsyncOmniQ(backend="memory", task_queue=LegacyQueue(store=store)) as app:

        @app.task(concurrency_limit=1)
        async def job() -> None: ...

        with pytest.raises(NotSupportedError, match="flow_control"):
            await job.enqueue()
        with pytest.raises(NotSupportedError, match="flow_control"):
            await app.enqueue_many(job, [(), ()])
        assert await app.count_tasks() == 0, "nothing is stored"
        await app.enqueue("unlimited")  # everything else keeps working
        assert await app.count_tasks() == 1
        with pytest.raises(NotSupportedError, match="queue_pause"):
            await app.pause_queue("default")
        assert await app.paused_queues() == []


def test_the_sync_app_pauses_and_resumes_queues() -> None:
    with OmniQ(backend="memory", url="limits-sync") as app:
        app.pause_queue("mail")
        app.pause_queue("bulk")
        assert app.paused_queues() == ["bulk", "mail"]
        app.resume_queue("mail")
        assert app.paused_queues() == ["bulk"]
        with pytest.raises(ConfigurationError, match="queue"):
            app.pause_queue("")


async def test_a_worker_pool_never_runs_more_than_the_limit() -> None:
    running: set[int] = set()
    most = 0
    async with AsyncOmniQ(backend="memory", url="limits-pool") as app:

        @app.task(concurrency_limit=3)
        async def limited(n: int) -> int:
            nonlocal most
            running.add(n)
            most = max(most, len(running))
            await anyio.sleep(0.02)
            running.discard(n)
            return n

        @app.task
        async def free(n: int) -> int:
            return n

        await app.enqueue_many(limited, [(n,) for n in range(30)])
        await app.enqueue_many(free, [(n,) for n in range(10)])
        with anyio.fail_after(30):
            await app.run_worker(concurrency=20, burst=True)
        assert await app.count_tasks(TaskStatus.SUCCEEDED) == 40
    assert most == 3, f"at most 3 at once, and the pool of 20 should have reached 3 (got {most})"


async def test_a_paused_queue_is_not_drained() -> None:
    async with AsyncOmniQ(backend="memory", url="limits-paused") as app:
        await app.enqueue("job", 1, queue="held")
        await app.enqueue("job", 2, queue="open")
        await app.pause_queue("held")

        @app.task(name="job")
        async def job(n: int) -> int:
            return n

        started = time.monotonic()
        with anyio.fail_after(20):
            await app.run_worker(concurrency=2, burst=True, queues=["held", "open"])
        assert time.monotonic() - started < 15
        assert await app.count_tasks(TaskStatus.SUCCEEDED) == 1
        assert await app.count_tasks(TaskStatus.PENDING, queue="held") == 1
        await app.resume_queue("held")
        with anyio.fail_after(20):
            await app.run_worker(concurrency=2, burst=True, queues=["held", "open"])
        assert await app.count_tasks(TaskStatus.SUCCEEDED) == 2
