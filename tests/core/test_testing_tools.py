"""Tools for users who test code that enqueues (issue 18, item 6): eager mode, ``omniq_app`` and ``drain``."""

from __future__ import annotations

import pytest

from omniq import AsyncOmniQ, OmniQ, TaskStatus
from omniq.testing import drain, memory_app

pytestmark = pytest.mark.anyio


async def test_eager_mode_runs_a_task_at_enqueue_and_stores_its_result() -> None:
    async with AsyncOmniQ(backend="memory", url="eager-1", eager=True, retry_backoff=60) as app:

        @app.task
        async def add(a: int, b: int) -> int:
            return a + b

        calls = 0

        @app.task(max_retries=2)
        def flaky() -> str:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise ConnectionError("not yet")
            return "done"

        result = await app.get_result(await add.enqueue(2, 3))
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.result == 5
        retried = await app.get_result(await flaky.enqueue())  # retries at once, without the 60 s back-off
        assert retried is not None and (retried.result, retried.attempts) == ("done", 3)
        ids = await app.enqueue_many(add, [(1, 1), (2, 2)])
        assert [(await app.get_result(i)).result for i in ids] == [2, 4]  # type: ignore[union-attr]
        assert await app.count_tasks() == 0, "nothing is queued"


async def test_eager_failures_and_dependencies() -> None:
    async with AsyncOmniQ(backend="memory", url="eager-2", eager=True) as app:

        @app.task(max_retries=0)
        async def boom() -> None:
            raise ValueError("bad")

        @app.task
        async def after() -> str:
            return "ran"

        failed = await boom.enqueue()
        result = await app.get_result(failed)
        assert result is not None and result.status is TaskStatus.FAILED and result.error is not None
        assert result.error.type == "ValueError"
        blocked = await app.get_result(await after.options(depends_on=failed).enqueue())
        assert blocked is not None and blocked.error is not None and blocked.error.type == "DependencyFailed"
        ok = await app.get_result(await after.options(depends_on=await after.enqueue()).enqueue())
        assert ok is not None and ok.result == "ran"


def test_eager_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_EAGER", "1")
    monkeypatch.setenv("OMNIQ_BACKEND", "memory")
    with OmniQ() as app:

        @app.task
        def double(x: int) -> int:
            return 2 * x

        assert app.settings.eager
        assert app.get_result(double.enqueue(21)).result == 42  # type: ignore[union-attr]


async def test_the_omniq_app_fixture_and_drain(omniq_app: AsyncOmniQ) -> None:
    seen: list[int] = []

    @omniq_app.task
    async def record(n: int) -> None:
        seen.append(n)

    await omniq_app.enqueue_many(record, [(n,) for n in range(5)])
    assert seen == []
    await drain(omniq_app)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert await omniq_app.count_tasks(TaskStatus.SUCCEEDED) == 5


async def test_memory_apps_do_not_share_a_store() -> None:
    async with memory_app() as first, memory_app() as second:
        await first.enqueue("anything", 1)
        assert await first.count_tasks() == 1 and await second.count_tasks() == 0


async def test_signup_sends_a_mail(omniq_app: AsyncOmniQ) -> None:
    """The README's example, as written there."""
    sent = []

    @omniq_app.task
    async def send_mail(to: str) -> None:
        sent.append(to)

    await send_mail.enqueue("ada@example.com")
    await drain(omniq_app)
    assert sent == ["ada@example.com"]
