"""The backends' connection helper, against a real TCP echo server: open once, share, fork, errors."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import pytest

from omniq.connection import CONNECTION_ERRORS, Connection, fork_generation
from omniq.errors import BackendError, BackendUnavailableError

pytestmark = pytest.mark.anyio

Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class EchoServer:
    """Counts the connections it accepts and echoes every line."""

    port: int = 0
    accepted: int = 0
    open_now: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_now += 1
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        finally:
            self.open_now -= 1
            writer.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[EchoServer]:
    echo = EchoServer()
    tcp = await asyncio.start_server(echo.handle, "127.0.0.1", 0)
    echo.port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        yield echo


async def _open(port: int) -> Client:
    return await asyncio.open_connection("127.0.0.1", port)


async def _close(client: Client) -> None:
    client[1].close()
    await client[1].wait_closed()


async def _echo(client: Client, text: str) -> str:
    client[1].write(text.encode() + b"\n")
    await client[1].drain()
    return (await client[0].readline()).decode().strip()


def _connection(port: int, **options: object) -> Connection[Client]:
    return Connection(f"tcp://user:s3cret@127.0.0.1:{port}", open=partial(_open, port), close=_close, **options)  # type: ignore[arg-type]


async def _settle(server: EchoServer, open_now: int) -> None:
    for _ in range(200):
        if server.open_now == open_now:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{server.open_now} connections open, expected {open_now}")


async def test_concurrent_connects_open_one_client_and_close_is_idempotent(server: EchoServer) -> None:
    connection = _connection(server.port)
    assert not connection.connected
    with pytest.raises(BackendError, match="not connected"):
        _ = connection.current
    clients = await asyncio.gather(*(connection.connect() for _ in range(10)))
    assert all(client is clients[0] for client in clients)
    assert connection.current is clients[0] and await connection.client() is clients[0]
    assert await _echo(connection.current, "hello") == "hello"
    assert server.accepted == 1
    await connection.close()
    await connection.close()
    assert not connection.connected
    await _settle(server, 0)


async def test_client_opens_on_first_use(server: EchoServer) -> None:
    connection = _connection(server.port)
    assert await _echo(await connection.client(), "lazy") == "lazy"
    await connection.close()


async def test_shared_key_gives_one_client_closed_by_the_last_user(server: EchoServer) -> None:
    key = ("echo", server.port)
    first, second = _connection(server.port, share=key), _connection(server.port, share=key)
    assert await first.connect() is await second.connect()
    assert server.accepted == 1
    await first.close()
    assert await _echo(second.current, "still open") == "still open"
    await second.close()
    await _settle(server, 0)
    third = _connection(server.port, share=key)  # a new user after the last closed opens afresh
    await third.connect()
    assert server.accepted == 2
    await third.close()


async def test_an_unreachable_engine_is_backend_unavailable_without_the_password() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = _connection(port, errors=CONNECTION_ERRORS)
    with pytest.raises(BackendUnavailableError) as info:
        await connection.connect()
    assert "s3cret" not in str(info.value) and "127.0.0.1" in str(info.value)
    assert not connection.connected


async def test_a_failed_open_leaves_nothing_and_the_next_connect_retries(server: EchoServer) -> None:
    attempts = []

    async def flaky() -> Client:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionRefusedError("engine starting")
        return await _open(server.port)

    connection: Connection[Client] = Connection("tcp://127.0.0.1", open=flaky, close=_close)
    with pytest.raises(BackendUnavailableError, match="engine starting"):
        await connection.connect()
    assert not connection.connected
    assert await _echo(await connection.connect(), "second") == "second"
    await connection.close()


def _child_uses_its_own_client(connection: Connection[Client], generation: int, out: object) -> None:
    async def main() -> str:
        inherited = not connection.connected and fork_generation() != generation
        client = await connection.client()  # opens this process's own
        answer = await _echo(client, f"child {os.getpid()}")
        await connection.close()
        return f"{inherited} {answer.startswith('child')}"

    out.send(asyncio.run(main()))  # type: ignore[attr-defined]


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
async def test_a_forked_child_opens_its_own_client_and_leaves_the_parents_alone(server: EchoServer) -> None:
    connection = _connection(server.port)
    parent_client = await connection.connect()
    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(
        target=_child_uses_its_own_client, args=(connection, fork_generation(), sender)
    )
    child.start()
    for _ in range(1000):  # the server runs on this loop: keep it turning while the child works
        if receiver.poll():
            break
        await asyncio.sleep(0.01)
    assert receiver.recv() == "True True"
    await asyncio.to_thread(child.join, 30)
    assert child.exitcode == 0
    assert server.accepted == 2  # the child's own connection, not the parent's
    assert connection.current is parent_client
    assert await _echo(parent_client, "parent") == "parent"  # untouched by the child's close
    await connection.close()


async def test_components_connecting_at_once_open_one_shared_client(server: EchoServer) -> None:
    key = ("echo-race", server.port)
    connections = [_connection(server.port, share=key) for _ in range(5)]
    clients = await asyncio.gather(*(connection.connect() for connection in connections))
    assert all(client is clients[0] for client in clients)
    assert server.accepted == 1  # the first opened, the others waited and joined; none opened and closed a spare
    for connection in connections:
        await connection.close()
    await _settle(server, 0)


async def test_discard_drops_a_dead_client_and_the_next_use_opens_a_new_one(server: EchoServer) -> None:
    connection = _connection(server.port)
    first = await connection.connect()
    first[1].close()  # the socket dies under the component
    await connection.discard()
    assert not connection.connected
    second = await connection.client()
    assert second is not first and await _echo(second, "fresh") == "fresh"
    assert server.accepted == 2
    await connection.close()
