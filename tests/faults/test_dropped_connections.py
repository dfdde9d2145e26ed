"""A live client whose connections the network drops, without restarting the shared servers.

A :class:`~tests.faults.tcpproxy.TcpProxy` sits between the component and the
real server: resetting its connections looks, to the client, like a server
restart that is already over; stopping it looks like an outage.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from omniq.errors import BackendUnavailableError
from omniq.models import Task, TaskStatus, new_id

from .conftest import drop_server_data
from .tcpproxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from omniq.base import BaseTaskQueue

pytestmark = [pytest.mark.anyio, pytest.mark.servers]

PORTS = {"redis": 6379, "postgres": 5432, "nats": 4222}


def _task() -> Task:
    return Task(id=new_id(), func="record", payload=b"", max_retries=0)


def make_queue(backend: str, url: str, prefix: str) -> BaseTaskQueue:
    """A task queue of ``backend`` at ``url`` under ``prefix`` (schema for PostgreSQL)."""
    if backend == "redis":
        from omniq_redis import RedisTaskQueue

        return RedisTaskQueue(url, prefix=prefix)
    if backend == "postgres":
        from omniq_postgres import PostgresTaskQueue

        return PostgresTaskQueue(url, schema=prefix, min_size=1, max_size=2)
    from omniq_nats import NatsTaskQueue

    return NatsTaskQueue(url, prefix=prefix)


@pytest.fixture
async def isolated(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str, str]]:
    """(backend, real server url, fresh prefix) for the test's ``backend`` parameter; data dropped afterwards."""
    backend: str = request.param
    url: str = request.getfixturevalue(f"{backend}_url")
    prefix = f"omniq_drop_{uuid.uuid4().hex[:12]}"
    try:
        yield backend, url, prefix
    finally:
        await drop_server_data(backend, url, prefix)


@pytest.fixture
async def proxy(isolated: tuple[str, str, str]) -> AsyncIterator[TcpProxy]:
    backend, url, _ = isolated
    tcp = TcpProxy(url, PORTS[backend])
    await tcp.start()
    try:
        yield tcp
    finally:
        await tcp.stop()


@pytest.mark.parametrize("isolated", ["redis", "postgres"], indirect=True)
async def test_connections_reset_under_a_live_client_are_replaced_transparently(
    isolated: tuple[str, str, str], proxy: TcpProxy
) -> None:
    backend, _, prefix = isolated
    async with make_queue(backend, proxy.url, prefix) as queue:
        await queue.enqueue(_task())
        proxy.drop_connections()  # what a restart does to the open connections
        await anyio.sleep(0.3)
        # The server is up: the client must reconnect rather than surface the dead pooled connection.
        await queue.enqueue(_task())
        assert await queue.count(status=TaskStatus.PENDING) == 2


@pytest.mark.parametrize("isolated", ["nats"], indirect=True)
async def test_enqueue_that_failed_during_an_outage_never_runs_later(
    isolated: tuple[str, str, str], proxy: TcpProxy
) -> None:
    backend, url, prefix = isolated
    async with make_queue(backend, proxy.url, prefix) as producer:
        accepted = await producer.enqueue(_task())
        await proxy.stop()
        await anyio.sleep(0.3)  # the client has noticed: it is reconnecting, not writing into a dead socket
        failed = _task()
        with anyio.fail_after(30), pytest.raises(BackendUnavailableError):
            await producer.enqueue(failed)
        await proxy.start()  # the producer reconnects through the proxy
        async with make_queue(backend, url, prefix) as worker:
            claimed: list[Any] = []
            with anyio.move_on_after(5):  # leave the producer time to reconnect and flush whatever it kept
                while True:
                    claimed += await worker.claim(["default"], 10, lease=30, worker_id="observer", wait=0.5)
            ids = [task.id for task in claimed]
        assert accepted in ids
        assert failed.id not in ids, "the enqueue raised, yet the task was delivered after the reconnect"
