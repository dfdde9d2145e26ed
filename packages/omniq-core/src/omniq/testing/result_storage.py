"""Conformance tests for :class:`~omniq.base.BaseResultStorage`.

Subclass :class:`ResultStorageSuite` in a class named ``Test...`` and provide a
``result_storage_factory`` fixture: a zero-argument callable returning a new,
unconnected storage bound to one store that is private to the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import anyio
import msgspec
import pytest

from omniq.base import BaseResultStorage, Capability
from omniq.errors import NotSupportedError
from omniq.models import TaskError, TaskStatus
from omniq.testing.fixtures import (
    CLOCK_SKEW,
    GARBAGE_PAYLOAD,
    connected,
    make_result,
    now_ms,
    requires,
    wait_until,
)

__all__ = ["ResultStorageSuite"]

StorageFactory = Callable[[], BaseResultStorage]


class ResultStorageSuite:
    """Every behaviour of the result storage contract, against a real engine."""

    pytestmark = [pytest.mark.anyio]

    @pytest.fixture
    async def result_storage(self, result_storage_factory: StorageFactory) -> AsyncIterator[BaseResultStorage]:
        """A connected result storage from the backend's factory."""
        async with connected(result_storage_factory) as (storage,):
            yield storage

    async def test_set_get_round_trip(self, result_storage: BaseResultStorage) -> None:
        error = TaskError(type="KeyError", message="'x'", traceback="Traceback...\n", attempt=3, retryable=False)
        result = make_result(
            status=TaskStatus.FAILED,
            payload=GARBAGE_PAYLOAD,
            error=error,
            attempts=3,
            func="app.tasks:charge",
            queue="billing",
            started_at=now_ms(-2),
            finished_at=now_ms(-1),
            expires_at=now_ms(3600),
        )
        await result_storage.set(result)
        stored = await result_storage.get(result.task_id)
        assert stored is not None
        for field in result.__struct_fields__:
            assert getattr(stored, field) == getattr(result, field), field
        assert not stored.ok and stored.finished_at.utcoffset() == timedelta(0)

    async def test_in_memory_value_is_never_stored(self, result_storage: BaseResultStorage) -> None:
        result = make_result(result={"decoded": "value"})
        await result_storage.set(result)
        stored = await result_storage.get(result.task_id)
        assert stored is not None and stored.result is msgspec.UNSET and stored.payload == result.payload

    async def test_set_replaces(self, result_storage: BaseResultStorage) -> None:
        first = make_result(status=TaskStatus.FAILED, payload=b"", error=TaskError(type="E", message="first"))
        await result_storage.set(first)
        second = make_result(first.task_id, payload=b"\x01second", attempts=2)
        await result_storage.set(second)
        stored = await result_storage.get(first.task_id)
        assert stored is not None
        assert (stored.status, stored.payload, stored.error, stored.attempts) == (
            TaskStatus.SUCCEEDED,
            b"\x01second",
            None,
            2,
        )

    async def test_get_unknown_is_none(self, result_storage: BaseResultStorage) -> None:
        assert await result_storage.get("0" * 32) is None

    async def test_set_many(self, result_storage: BaseResultStorage) -> None:
        results = [make_result(payload=bytes([i, 255])) for i in range(25)]
        await result_storage.set_many(results)
        await result_storage.set_many([])
        for result in results:
            stored = await result_storage.get(result.task_id)
            assert stored is not None and stored.payload == result.payload

    async def test_get_many(self, result_storage: BaseResultStorage) -> None:
        results = [make_result(payload=bytes([i])) for i in range(30)]
        await result_storage.set_many(results)
        expired = make_result(expires_at=now_ms(-1 - CLOCK_SKEW))
        await result_storage.set(expired)
        ids = [r.task_id for r in results]
        asked = [ids[3], "0" * 32, expired.task_id, *ids, ids[3]]
        got = await result_storage.get_many(asked)
        assert [g.payload if g is not None else None for g in got] == [
            bytes([3]),
            None,
            None,
            *(bytes([i]) for i in range(30)),
            bytes([3]),
        ]
        assert await result_storage.get_many([]) == []

    async def test_delete(self, result_storage: BaseResultStorage) -> None:
        result = make_result()
        await result_storage.set(result)
        assert await result_storage.delete(result.task_id)
        assert await result_storage.get(result.task_id) is None
        assert not await result_storage.delete(result.task_id)
        assert not await result_storage.delete("0" * 32)

    async def test_wait_wakes_when_another_instance_sets(self, result_storage_factory: StorageFactory) -> None:
        async with connected(result_storage_factory, 2) as (waiter, writer):
            result = make_result(payload=b"\x01done")
            got: list[Any] = []

            async def wait() -> None:
                got.append(await waiter.wait(result.task_id, 60))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait)
                    await anyio.sleep(0.5)  # let the waiter block first
                    await writer.set(result)
            assert got[0] is not None and got[0].payload == b"\x01done"

    async def test_wait_without_timeout_wakes_on_set_many(self, result_storage_factory: StorageFactory) -> None:
        async with connected(result_storage_factory, 2) as (waiter, writer):
            results = [make_result(), make_result()]
            got: list[Any] = []

            async def wait() -> None:
                got.append(await waiter.wait(results[1].task_id, None))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait)
                    await anyio.sleep(0.3)
                    await writer.set_many(results)
            assert got[0] is not None and got[0].task_id == results[1].task_id

    async def test_wait_returns_existing_result_at_once(self, result_storage: BaseResultStorage) -> None:
        result = make_result()
        await result_storage.set(result)
        with anyio.fail_after(10):
            stored = await result_storage.wait(result.task_id, 60)
        assert stored is not None and stored.task_id == result.task_id

    async def test_wait_times_out_with_none(self, result_storage: BaseResultStorage) -> None:
        with anyio.fail_after(10):
            assert await result_storage.wait("0" * 32, 0.3) is None

    async def test_expired_result_is_invisible_and_purged(self, result_storage: BaseResultStorage) -> None:
        expired = make_result(expires_at=now_ms(-1 - CLOCK_SKEW))
        live = make_result(expires_at=now_ms(3600))
        forever = make_result()
        await result_storage.set_many([expired, live, forever])
        assert await result_storage.get(expired.task_id) is None
        with anyio.fail_after(10):
            assert await result_storage.wait(expired.task_id, 0.2) is None
        assert await result_storage.purge() in (0, 1)  # 0 when the engine already dropped it (TTL keys)
        assert await result_storage.get(expired.task_id) is None
        assert await result_storage.get(live.task_id) is not None
        assert await result_storage.get(forever.task_id) is not None
        assert await result_storage.purge() == 0

    async def test_result_expires_after_a_while(self, result_storage: BaseResultStorage) -> None:
        result = make_result(expires_at=now_ms(0.5 + CLOCK_SKEW))  # live at first, even on an engine clock ahead
        await result_storage.set(result)
        assert await result_storage.get(result.task_id) is not None

        async def gone() -> bool:
            return await result_storage.get(result.task_id) is None

        await wait_until(gone, timeout=0.5 + 2 * CLOCK_SKEW + 5, message="the result outlived its expires_at")

    async def test_purge_all(self, result_storage: BaseResultStorage) -> None:
        results = [make_result(), make_result(expires_at=now_ms(3600)), make_result()]
        await result_storage.set_many(results)
        assert await result_storage.purge(expired_only=False) == 3
        for result in results:
            assert await result_storage.get(result.task_id) is None
        assert await result_storage.purge(expired_only=False) == 0

    async def test_without_blocking_reads_get_blocking_refuses(self, result_storage: BaseResultStorage) -> None:
        if Capability.BLOCKING_READS in type(result_storage).capabilities:
            pytest.skip(f"{type(result_storage).__name__} has the {Capability.BLOCKING_READS} capability")
        with pytest.raises(NotSupportedError):
            await anyio.to_thread.run_sync(result_storage.get_blocking, "0" * 32)

    @requires(Capability.BLOCKING_READS)
    async def test_get_blocking_reads_what_get_reads_from_threads_at_once(
        self, result_storage: BaseResultStorage
    ) -> None:
        error = TaskError(type="ValueError", message="no", traceback="Traceback...\n", attempt=2, retryable=True)
        results = [
            make_result(payload=bytes([i]) * 3, expires_at=now_ms(3600) if i % 2 else None) for i in range(6)
        ] + [make_result(status=TaskStatus.FAILED, error=error, attempts=2, payload=b"")]
        expired = make_result(expires_at=now_ms(-1 - CLOCK_SKEW))
        await result_storage.set_many([*results, expired])
        read: dict[str, Any] = {}

        async def get(task_id: str) -> None:
            read[task_id] = await anyio.to_thread.run_sync(result_storage.get_blocking, task_id)

        asked = [r.task_id for r in results] + [expired.task_id, "0" * 32]
        async with anyio.create_task_group() as group:
            for task_id in asked:
                group.start_soon(get, task_id)
        for result in results:
            assert read[result.task_id] is not None and read[result.task_id].payload == result.payload
            assert read[result.task_id] == await result_storage.get(result.task_id)
        assert read[expired.task_id] is None and read["0" * 32] is None
        await result_storage.delete(results[0].task_id)
        assert await anyio.to_thread.run_sync(result_storage.get_blocking, results[0].task_id) is None
