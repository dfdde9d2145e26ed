"""An outcome the queue refuses to record, again and again, holds back no other and is not retried for ever.

The queue under the pool is the memory backend with one change, registered
the way a third-party backend is: its ``finish`` raises for any batch holding
one poisoned task (as a backend does for a record it cannot write). The
pool, not the backend, is under test.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Sequence
from typing import Any, ClassVar

import anyio
import pytest

from omniq import hookimpl, plugins
from omniq.backends.memory import MemoryTaskQueue
from omniq.base import BaseResultStorage
from omniq.errors import SerializationError
from omniq.hookspecs import BackendSpec
from omniq.models import Outcome, TaskStatus
from omniq.worker.finisher import MAX_FINISH_FAILURES

pytestmark = pytest.mark.anyio


class PoisonedFinishQueue(MemoryTaskQueue):
    """MemoryTaskQueue whose ``finish`` fails for every batch that holds ``poisoned``."""

    poisoned: ClassVar[str] = ""
    calls: ClassVar[list[list[str]]] = []

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        ids = [o.task_id for o in outcomes]
        type(self).calls.append(ids)
        if self.poisoned in ids:
            raise SerializationError(f"cannot write the record of {self.poisoned}")
        return await super().finish(outcomes, results=results)


@pytest.fixture
def poisoned_backend() -> Any:
    @hookimpl
    def omniq_task_queue_types() -> list[BackendSpec]:
        path = f"{__name__}:PoisonedFinishQueue"
        return [BackendSpec(name="poisoned-finish", path=path, distribution="omniq-tests")]

    plugins.register(types.SimpleNamespace(omniq_task_queue_types=omniq_task_queue_types), name="poisoned-test")
    PoisonedFinishQueue.calls = []
    try:
        yield PoisonedFinishQueue
    finally:
        plugins.get_plugin_manager().unregister(name="poisoned-test")
        plugins._invalidate()


async def test_an_outcome_that_cannot_be_recorded_is_dropped_after_a_few_tries(
    make_app: Any, poisoned_backend: Any, caplog: Any
) -> None:
    async with make_app(task_queue_type="poisoned-finish") as app:
        app.register(lambda n: n, name="f")
        poisoned = await app.enqueue("f", 0, max_retries=0)
        good = [await app.enqueue("f", n) for n in range(1, 6)]
        poisoned_backend.poisoned = poisoned
        with caplog.at_level(logging.WARNING, logger="omniq"), anyio.fail_after(15):
            await app.worker(burst=True, concurrency=10).start()
        for task_id in good:
            assert (await app.get_result(task_id)).status is TaskStatus.SUCCEEDED
        tries = [ids for ids in poisoned_backend.calls if poisoned in ids]
        alone = [ids for ids in tries if ids == [poisoned]]
        assert len(alone) == MAX_FINISH_FAILURES, tries  # tried alone a few times, then dropped
        assert tries[-1] == [poisoned]  # never tried again once dropped
        assert any(
            r.levelno == logging.ERROR and poisoned in r.getMessage() and "could not be recorded" in r.getMessage()
            for r in caplog.records
        )
