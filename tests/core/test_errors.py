"""Every error ``omniq`` exports is one OmniQ raises; the two the seed project exported and never raised are deprecated.

* ``TaskNotFoundError``: raised by ``get_result(task_id, wait=True)`` when
  there is neither a task nor a result with that id (the wait could never end);
* ``ResultTimeoutError``: gone from the exports: ``get_result(wait=True,
  timeout=...)`` returns None when the time runs out, as the README documents;
* ``LeaseLostError``: gone from the exports: a worker that loses a lease drops
  that attempt's outcome and logs it; nothing reaches user code.

Both deprecated names stay importable (``omniq.X`` warns), so the seed
project's ``except omniq.ResultTimeoutError`` still runs.
"""

from __future__ import annotations

from typing import Any

import pytest

import omniq
from omniq import TaskNotFoundError, TaskStatus

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", ["LeaseLostError", "ResultTimeoutError"])
def test_never_raised_errors_are_not_exported_and_warn_when_used(name: str) -> None:
    assert name not in omniq.__all__
    assert name not in omniq.errors.__all__
    with pytest.warns(DeprecationWarning, match=f"omniq.{name} is deprecated and never raised"):
        error = getattr(omniq, name)
    assert error is getattr(omniq.errors, name) and issubclass(error, omniq.OmniQError)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchError"):
        getattr(omniq, "NoSuchError")  # noqa: B009


async def test_waiting_for_an_unknown_task_raises_task_not_found(make_app: Any) -> None:
    async with make_app() as app:
        with pytest.raises(TaskNotFoundError, match="no-such-task"):
            await app.get_result("no-such-task", wait=True)  # no timeout: it would wait for ever
        assert await app.get_result("no-such-task") is None  # read without waiting: None, as documented


async def test_waiting_for_a_known_task_times_out_with_none(make_app: Any) -> None:
    async with make_app() as app:
        task_id = await app.enqueue(lambda: None)
        assert await app.get_result(task_id, wait=True, timeout=0.2) is None  # not run: no worker


async def test_a_purged_task_whose_result_is_kept_is_found(make_app: Any) -> None:
    async with make_app() as app:
        app.register(lambda: 7, name="f")
        task_id = await app.enqueue("f")
        await app.worker(burst=True).start()
        await app.purge(queue="default")  # tasks only: the result stays
        assert await app.get_task(task_id) is None
        result = await app.get_result(task_id, wait=True, timeout=5)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.result == 7
