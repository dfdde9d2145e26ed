"""omniq.contrib.prometheus: the counters a worker keeps, scraped over HTTP from real worker processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from omniq import AsyncOmniQ, OmniQ, Settings
from tests.contrib.conftest import free_port, scrape, total
from tests.faults.conftest import wait_until

prometheus = pytest.importorskip("omniq.contrib.prometheus", exc_type=ImportError)

Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def enabled() -> Iterator[None]:
    prometheus.enable()
    try:
        yield
    finally:
        prometheus.disable()


def _value(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.anyio
async def test_the_plugin_counts_each_event_in_process(enabled: None, tmp_path: Path) -> None:
    names = [
        "omniq_tasks_enqueued_total",
        "omniq_tasks_started_total",
        "omniq_tasks_succeeded_total",
        "omniq_tasks_failed_total",
        "omniq_tasks_retried_total",
    ]
    labels = {"queue": "metrics", "task": "flaky"}
    before = {name: _value(name, **labels) for name in names}
    waits = _value("omniq_task_queue_wait_seconds_count", **labels)
    durations = _value("omniq_task_duration_seconds_count", **labels)
    settings = Settings(backend="sqlite", base_dir=tmp_path, retry_backoff=0.01, retry_backoff_max=0.01)
    async with AsyncOmniQ(settings) as app:

        async def flaky(fail: bool) -> None:
            if fail:
                raise ValueError("no")

        app.register(flaky, name="flaky")
        for fail in (False, False, True):
            await app.enqueue("flaky", fail, queue="metrics", max_retries=1)
        with anyio.fail_after(30):
            await app.worker(burst=True, queues=["metrics"]).start()
        with anyio.fail_after(10):
            sampler = anyio.create_task_group()
            async with sampler:
                sampler.start_soon(prometheus.sample_queue_depth, app, 0.05)
                await anyio.sleep(0.3)
                sampler.cancel_scope.cancel()
    after = {name: _value(name, **labels) - before[name] for name in names}
    assert after == {
        "omniq_tasks_enqueued_total": 3,
        "omniq_tasks_started_total": 4,  # the failing one twice
        "omniq_tasks_succeeded_total": 2,
        "omniq_tasks_failed_total": 1,
        "omniq_tasks_retried_total": 1,
    }
    assert _value("omniq_task_queue_wait_seconds_count", **labels) - waits == 4
    assert _value("omniq_task_duration_seconds_count", **labels) - durations == 4
    assert _value("omniq_tasks_in_flight") == 0
    assert _value("omniq_queue_depth", queue="metrics", status="succeeded") == 2
    assert _value("omniq_queue_depth", queue="metrics", status="failed") == 1
    body, content_type = prometheus.render_metrics()
    assert content_type.startswith("text/plain") and b"omniq_tasks_succeeded_total" in body


def test_off_unless_enabled() -> None:
    """Importing omniq (and its worker) imports neither prometheus_client nor this plugin; disabled, it is not registered."""
    code = (
        "import sys, omniq, omniq.worker.pool, omniq.cli.worker; "
        "assert not {'prometheus_client', 'omniq.contrib.prometheus', 'opentelemetry'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    prometheus.disable()
    from omniq.plugins import get_plugin_manager

    assert get_plugin_manager().get_plugin(prometheus.PLUGIN_NAME) is None


def _enqueue(env: dict[str, str], count: int, *args: object, name: str = "add", retries: int = 0) -> list[str]:
    settings = Settings(backend="sqlite", base_dir=Path(env["OMNIQ_BASE_DIR"]))
    with OmniQ(settings) as producer:
        return [producer.enqueue(name, *args, max_retries=retries) for _ in range(count)]


def test_a_worker_serves_metrics_matching_the_tasks_it_ran(start_worker: Start, app_env: dict[str, str]) -> None:
    port = free_port()
    worker = start_worker("--metrics-port", str(port))
    _enqueue(app_env, 1, 3.0, name="nap")
    wait_until(lambda: total(scrape(port), "omniq_tasks_in_flight") == 1, 60, "the nap task in flight")
    _enqueue(app_env, 5, 1, 2)
    _enqueue(app_env, 2, name="boom", retries=1)
    samples = wait_until(
        lambda: (
            (s := scrape(port))
            and total(s, "omniq_tasks_succeeded_total") == 6
            and total(s, "omniq_tasks_failed_total") == 2
            and s
        ),
        60,
        "the worker's metrics to count 8 tasks",
    )
    assert total(samples, "omniq_tasks_started_total") == 10  # each boom twice
    assert total(samples, "omniq_tasks_retried_total", task="boom") == 2
    assert total(samples, "omniq_tasks_succeeded_total", queue="default", task="add") == 5
    assert total(samples, "omniq_tasks_failed_total", queue="default", task="boom") == 2
    assert total(samples, "omniq_task_duration_seconds_count") == 10
    assert total(samples, "omniq_task_queue_wait_seconds_count") == 10
    assert total(samples, "omniq_task_duration_seconds_sum") >= 3.0  # the nap
    wait_until(lambda: total(scrape(port), "omniq_tasks_in_flight") == 0, 30, "nothing in flight")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0


def test_processes_2_serve_one_endpoint_with_the_sum(start_worker: Start, app_env: dict[str, str]) -> None:
    ids = _enqueue(app_env, 30, 0.05, name="nap")
    port = free_port()
    supervisor = start_worker("--processes", "2", "--concurrency", "1", "--metrics-port", str(port))
    samples = wait_until(
        lambda: (s := scrape(port)) and total(s, "omniq_tasks_succeeded_total") == 30 and s,
        90,
        "the supervisor's endpoint to count 30 tasks",
    )
    assert total(samples, "omniq_tasks_started_total", queue="default", task="nap") == 30
    # the supervisor samples the queue depth (at start, then every 15 s)
    assert ("omniq_queue_depth", frozenset({("queue", "default"), ("status", "pending")})) in samples
    wait_until(lambda: total(scrape(port), "omniq_tasks_in_flight") == 0, 30, "nothing in flight")
    settings = Settings(backend="sqlite", base_dir=Path(app_env["OMNIQ_BASE_DIR"]))
    with OmniQ(settings) as app:
        pids = {app.get_result(task_id).result for task_id in ids}  # type: ignore[union-attr]
    assert len(pids) == 2, pids  # both children ran tasks: the endpoint summed them
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(60) == 0


def test_observations_added_per_bucket_equal_prometheus_clients_observe() -> None:
    """The plugin adds a batch's observations per bucket (cheaper); the samples equal observe() one by one."""
    from bisect import bisect_left

    from prometheus_client import CollectorRegistry, Histogram

    from omniq.contrib.task_metrics import DURATION_BOUNDS, DURATION_BUCKETS, add_observations

    amounts = [0.0, 0.0005, 0.001, 0.0011, 0.3, 1.0, 7.5, 300.0, 4000.0]

    def samples(batched: bool) -> list[tuple[str, dict[str, str], float]]:
        registry = CollectorRegistry()
        histogram = Histogram("h", "h", registry=registry, buckets=DURATION_BUCKETS)
        if batched:
            buckets = [0] * len(DURATION_BOUNDS)
            for amount in amounts:
                buckets[bisect_left(DURATION_BOUNDS, amount)] += 1
            add_observations(histogram, buckets, sum(amounts))
        else:
            for amount in amounts:
                histogram.observe(amount)
        return [(s.name, s.labels, s.value) for m in registry.collect() for s in m.samples if "created" not in s.name]

    assert samples(batched=True) == samples(batched=False)
