"""A live client whose connections the network drops, through a :class:`TcpProxy` in front of the real server.

Resetting the proxy's connections looks, to the client, like a server restart
that is already over: the next call must reconnect, not fail. Stopping the
proxy looks like an outage: a call fails with
:class:`~omniq.errors.BackendUnavailableError`, and a task whose enqueue raised
must never be delivered once the network is back. These tests run when the
store is reached over TCP, that is when ``fault_env`` has an ``OMNIQ_URL``
with a host; they skip otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import anyio
import pytest

from omniq.errors import BackendUnavailableError
from omniq.models import Task, TaskStatus, new_id
from omniq.testing.faults.cluster import FaultTests, task_queue_of
from omniq.testing.faults.tcpproxy import TcpProxy

__all__ = ["ConnectionFaultTests"]


def _task() -> Task:
    return Task(id=new_id(), func="record", payload=b"", max_retries=0)


class ConnectionFaultTests(FaultTests):
    """A task queue, built from ``fault_env`` as a worker builds it, whose TCP connections go through a proxy."""

    #: the port of ``fault_env``'s ``OMNIQ_URL`` when the URL names none (first-party schemes are known).
    default_port: ClassVar[int | None] = None
    #: seconds after its connections drop during which a client may fail calls with
    #: ``BackendUnavailableError`` while it reconnects by itself (a worker retries those). 0: the next
    #: call must succeed, reconnecting on the way (redis-py's and asyncpg's pools do; the NATS client
    #: fails publishes fast while it reconnects).
    reconnect_grace: ClassVar[float] = 0.0

    @pytest.fixture
    async def tcp_proxy(self, fault_env: dict[str, str]) -> AsyncIterator[TcpProxy]:
        """A proxy in front of ``fault_env``'s ``OMNIQ_URL`` (skips the test when the store has no network address)."""
        url = fault_env.get("OMNIQ_URL")
        if not url or not urlsplit(url).hostname:
            pytest.skip("the store is not reached over TCP (fault_env has no OMNIQ_URL with a host): nothing to drop")
        proxy = TcpProxy(url, self.default_port)
        await proxy.start()
        try:
            yield proxy
        finally:
            await proxy.stop()

    @pytest.mark.anyio
    async def test_connections_reset_under_a_live_client_are_replaced_transparently(
        self, fault_env: dict[str, str], tcp_proxy: TcpProxy
    ) -> None:
        async with task_queue_of({**fault_env, "OMNIQ_URL": tcp_proxy.url}) as queue:
            await queue.enqueue(_task())
            tcp_proxy.drop_connections()  # what a restart does to the open connections
            await anyio.sleep(0.3)
            # The server is up: the client must reconnect rather than surface the dead connection
            # (within reconnect_grace, as BackendUnavailableError only).
            give_up = anyio.current_time() + self.reconnect_grace
            with anyio.fail_after(30 + self.reconnect_grace):
                while True:
                    try:
                        await queue.enqueue(_task())
                        break
                    except BackendUnavailableError:
                        if anyio.current_time() >= give_up:
                            raise
                        await anyio.sleep(0.2)
            assert await queue.count(status=TaskStatus.PENDING) == 2

    @pytest.mark.anyio
    async def test_enqueue_that_failed_during_an_outage_never_runs_later(
        self, fault_env: dict[str, str], tcp_proxy: TcpProxy
    ) -> None:
        async with task_queue_of({**fault_env, "OMNIQ_URL": tcp_proxy.url}) as producer:
            accepted = await producer.enqueue(_task())
            await tcp_proxy.stop()
            await anyio.sleep(0.3)  # the client has noticed: it is reconnecting, not writing into a dead socket
            failed = _task()
            with anyio.fail_after(30), pytest.raises(BackendUnavailableError):
                await producer.enqueue(failed)
            await tcp_proxy.start()  # the producer reconnects through the proxy
            async with task_queue_of(fault_env) as worker:
                claimed: list[Any] = []
                with anyio.move_on_after(5):  # leave the producer time to reconnect and flush whatever it kept
                    while True:
                        claimed += await worker.claim(["default"], 10, lease=30, worker_id="observer", wait=0.5)
                ids = [task.id for task in claimed]
            assert accepted in ids
            assert failed.id not in ids, "the enqueue raised, yet the task was delivered after the reconnect"
