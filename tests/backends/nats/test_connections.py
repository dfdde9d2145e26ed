"""Connection errors, settings and plugin wiring of the NATS backend."""

import pytest

from omniq.config import Settings
from omniq.errors import BackendUnavailableError
from omniq.plugins import resolve_backend
from omniq_nats import NatsEventStorage, NatsResultStorage, NatsTaskQueue

pytestmark = pytest.mark.anyio

UNREACHABLE = "nats://omniq:s3cr3t-pw@127.0.0.1:1"


@pytest.mark.parametrize("cls", [NatsTaskQueue, NatsResultStorage, NatsEventStorage])
async def test_unreachable_server_is_backend_unavailable_without_password(cls):
    component = cls(UNREACHABLE)
    with pytest.raises(BackendUnavailableError) as caught:
        await component.connect()
    assert "s3cr3t-pw" not in str(caught.value)
    await component.close()
    await component.close()  # idempotent


def test_plugin_registers_all_three_components():
    assert resolve_backend("task_queue", "nats") is NatsTaskQueue
    assert resolve_backend("result_storage", "nats") is NatsResultStorage
    assert resolve_backend("event_storage", "nats") is NatsEventStorage


def test_from_settings_reads_prefix_ttls_and_lease():
    settings = Settings(
        backend="nats", url="nats://10.0.0.1:4222", key_prefix="app1", lease_duration=45, result_ttl=60, event_ttl=120
    )
    queue = NatsTaskQueue.from_settings(settings.component("task_queue"), settings)
    results = NatsResultStorage.from_settings(settings.component("result_storage"), settings)
    events = NatsEventStorage.from_settings(settings.component("event_storage"), settings)
    assert (queue.url, queue.prefix, queue.ack_wait) == ("nats://10.0.0.1:4222", "app1", 45.0)
    assert (results.prefix, results.ttl) == ("app1", 60.0)
    assert (events.prefix, events.ttl) == ("app1", 120.0)


def test_default_url_and_bad_prefix():
    assert NatsTaskQueue().url == "nats://127.0.0.1:4222"
    with pytest.raises(ValueError, match="prefix"):
        NatsTaskQueue(prefix="a.b")


async def test_close_without_connect_and_twice(make_queue):
    queue = make_queue()
    await queue.close()
    await queue.connect()
    await queue.connect()  # idempotent
    await queue.close()
    await queue.close()


@pytest.mark.servers
async def test_workers_starting_together_all_read_the_engine_clock(make_queue):
    """The clock probe key keeps one message: a probe replaced by another process's before it is
    read back is retried, not raised (two workers starting at once crashed on it)."""
    import anyio

    queues = [make_queue() for _ in range(4)]
    for queue in queues:
        await queue.connect()
    try:
        clocks = [(await queue._connection.client()).clock for queue in queues]
        async with anyio.create_task_group() as group:
            for clock in clocks * 10:
                group.start_soon(clock.sync)
        assert all(abs(clock.offset) < 5 for clock in clocks)
    finally:
        for queue in queues:
            await queue.close()
