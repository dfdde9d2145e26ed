"""Retry control (issue 18, item 4): ``retry_on`` / ``no_retry_on`` per task and ``raise omniq.Retry(delay=...)``,
through a real worker pool on the memory engine."""

from __future__ import annotations

import pickle

import anyio
import pytest

from omniq import AsyncOmniQ, ConfigurationError, Retry, TaskStatus

pytestmark = pytest.mark.anyio


def _app(name: str) -> AsyncOmniQ:
    return AsyncOmniQ(backend="memory", url=name, retry_backoff=0.01, retry_backoff_max=0.02)


async def _run(app: AsyncOmniQ, task_id: str) -> tuple[TaskStatus, int, str]:
    with anyio.fail_after(30):
        await app.run_worker(concurrency=4, burst=True)
    result = await app.get_result(task_id)
    assert result is not None
    return result.status, result.attempts, result.error.type if result.error else ""


async def test_retry_on_retries_only_the_classes_given() -> None:
    async with _app("retry-on") as app:

        @app.task(max_retries=2, retry_on=(ConnectionError, TimeoutError))
        async def fetch(kind: str) -> None:
            raise {"net": ConnectionError, "bug": KeyError}[kind]("boom")

        assert await _run(app, await fetch.enqueue("net")) == (TaskStatus.FAILED, 3, "ConnectionError")
        assert await _run(app, await fetch.enqueue("bug")) == (TaskStatus.FAILED, 1, "KeyError")


async def test_no_retry_on_fails_at_once() -> None:
    async with _app("no-retry-on") as app:

        @app.task(max_retries=3, no_retry_on=ValueError)
        def parse(kind: str) -> None:
            raise {"bad": ValueError, "flaky": OSError}[kind]("boom")

        assert await _run(app, await parse.enqueue("bad")) == (TaskStatus.FAILED, 1, "ValueError")
        assert await _run(app, await parse.enqueue("flaky")) == (TaskStatus.FAILED, 4, "OSError")


async def test_a_subclass_counts_as_its_class() -> None:
    async with _app("subclass") as app:

        @app.task(max_retries=1, no_retry_on=LookupError)
        async def look() -> None:
            raise KeyError("missing")

        assert await _run(app, await look.enqueue()) == (TaskStatus.FAILED, 1, "KeyError")


async def test_raise_retry_runs_again_after_its_delay_and_counts_an_attempt() -> None:
    runs: list[float] = []
    async with _app("retry-raise") as app:

        @app.task(max_retries=2, no_retry_on=Exception)  # Retry is not subject to no_retry_on
        async def poll() -> str:
            runs.append(anyio.current_time())
            if len(runs) < 3:
                raise Retry(delay=0.3, reason="not ready yet")
            return "ready"

        task_id = await poll.enqueue()
        status, attempts, _ = await _run(app, task_id)
        assert (status, attempts) == (TaskStatus.SUCCEEDED, 3)
        assert all(later - earlier >= 0.25 for earlier, later in zip(runs, runs[1:], strict=False)), runs
        events = [e.type.value for e in await app.get_events(task_id)]
        assert events.count("retrying") == 2


async def test_raise_retry_without_attempts_left_fails() -> None:
    async with _app("retry-exhausted") as app:

        @app.task(max_retries=1)
        async def never() -> None:
            raise Retry(reason="still waiting")

        task_id = await never.enqueue()
        assert await _run(app, task_id) == (TaskStatus.FAILED, 2, "Retry")
        result = await app.get_result(task_id)
        assert result is not None and result.error is not None and "still waiting" in result.error.message


def test_retry_survives_a_process_boundary() -> None:
    copy = pickle.loads(pickle.dumps(Retry(delay=2.5, reason="later")))
    assert isinstance(copy, Retry) and (copy.delay, copy.reason) == (2.5, "later")


def test_bad_retry_options_are_refused() -> None:
    app = AsyncOmniQ(backend="memory")
    with pytest.raises(ConfigurationError, match="retry_on"):
        app.task(retry_on="ValueError")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no_retry_on"):
        app.task(no_retry_on=[ValueError, 3])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="delay"):
        Retry(delay=-1)
