"""SQLite with real OS processes sharing one file: claims, migrations, cross-process wake-ups."""

from __future__ import annotations

import json
import os
import queue
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq.models import Task, TaskResult, TaskStatus
from omniq_sqlite import SQLiteResultStorage, SQLiteTaskQueue
from omniq_sqlite._wake import wake_dir
from omniq_sqlite.schema import LATEST_VERSION, SCHEMA_VERSION
from tests.backends.sqlite.versions import make_version_1

pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("sqlite_child.py")


class Child:
    """A child process speaking one JSON line per message on stdout."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def message(self, timeout: float = 20.0) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"child sent nothing within {timeout} s") from None
        if not line:
            assert self.proc.stderr is not None
            raise AssertionError(f"child exited ({self.proc.wait()}): {self.proc.stderr.read()}")
        return json.loads(line)  # type: ignore[no-any-return]

    async def amessage(self, seconds: float = 20.0) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(self.message, seconds)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def children():
    started: list[Child] = []

    def spawn(*args: str) -> Child:
        child = Child(*args)
        started.append(child)
        return child

    yield spawn
    for child in started:
        child.close()


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'omniq.db'}"


@pytest.mark.anyio
async def test_processes_claiming_one_file_never_share_a_task(url, children):
    async with SQLiteTaskQueue(url) as q:
        ids = await q.enqueue_many([Task(id=f"task-{i:04d}", func="noop") for i in range(1500)])
        workers = [children("claim", url, "25") for _ in range(3)]
        for worker in workers:
            assert (await worker.amessage())["ready"]
        for worker in workers:
            worker.go()
        claimed = [(await worker.amessage(60))["claimed"] for worker in workers]
        everything = [task_id for ids_of_one in claimed for task_id in ids_of_one]
        assert len(everything) == len(set(everything)), "a task was handed to two processes"
        assert sorted(everything) == sorted(ids)
        assert await q.count(status=TaskStatus.SUCCEEDED) == 1500


def test_concurrent_first_start_migrates_once(tmp_path, children):
    url = f"sqlite:///{tmp_path / 'fresh' / 'omniq.db'}"
    procs = [children("migrate", url) for _ in range(4)]
    for proc in procs:
        proc.go()
    for proc in procs:
        assert proc.message(60) == {"ok": True}
    with sqlite3.connect(tmp_path / "fresh" / "omniq.db") as conn:
        versions = [row[0] for row in conn.execute(f"SELECT version FROM {SCHEMA_VERSION} ORDER BY version")]
    conn.close()
    assert versions == list(range(1, LATEST_VERSION + 1))


@pytest.mark.anyio
async def test_concurrent_upgrade_of_an_existing_database_migrates_once(tmp_path, children):
    path = tmp_path / "old" / "omniq.db"
    make_version_1(path)
    procs = [children("migrate", f"sqlite:///{path}") for _ in range(4)]
    for proc in procs:
        proc.go()
    for proc in procs:
        assert proc.message(60) == {"ok": True}
    with sqlite3.connect(path) as conn:
        versions = [row[0] for row in conn.execute(f"SELECT version FROM {SCHEMA_VERSION} ORDER BY version")]
    conn.close()
    assert versions == list(range(1, LATEST_VERSION + 1))
    async with SQLiteTaskQueue(f"sqlite:///{path}") as q:
        old = await q.get("old")
        assert old is not None and old.headers is None


@pytest.mark.anyio
async def test_enqueue_wakes_a_waiting_worker_in_another_process(url, children):
    async with SQLiteTaskQueue(url) as q:
        waiter = children("wait_work", url)
        assert (await waiter.amessage())["ready"]
        await anyio.sleep(0.2)  # let the child enter its 30 s wait
        await q.enqueue(Task(id="wake-me", func="noop"))
        reply = await waiter.amessage(20)
    assert reply["claimed"] == ["wake-me"]
    assert reply["elapsed"] < 5.0, f"woken after {reply['elapsed']:.1f} s: the hint did not arrive (poll is 30 s)"


@pytest.mark.anyio
async def test_result_wakes_a_waiting_producer_in_another_process(url, children):
    async with SQLiteResultStorage(url) as results:
        waiter = children("wait_result", url, "the-task")
        assert (await waiter.amessage())["ready"]
        await anyio.sleep(0.2)
        await results.set(TaskResult(task_id="the-task", status=TaskStatus.SUCCEEDED, payload=b"42"))
        reply = await waiter.amessage(20)
    assert reply["found"] is True
    assert reply["elapsed"] < 5.0, f"woken after {reply['elapsed']:.1f} s: the hint did not arrive (poll is 30 s)"


@pytest.mark.anyio
async def test_dead_process_sockets_are_removed_by_senders(url, tmp_path):
    async with SQLiteTaskQueue(url) as q:
        directory = wake_dir(str(tmp_path / "omniq.db"))
        os.makedirs(directory, exist_ok=True)

        stale = os.path.join(directory, "w-999999-deadbeef.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(stale)
        sock.close()  # the file stays, nobody listens: like a killed worker
        await q.enqueue(Task(id="t", func="noop"))
        assert await anyio.to_thread.run_sync(_gone_within, stale, 10.0), "the dead socket was not removed"


def _gone_within(path: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.anyio
async def test_resuming_a_queue_wakes_a_waiting_worker_in_another_process(url, children):
    async with SQLiteTaskQueue(url) as q:
        await q.set_queue_paused("default", True)
        await q.enqueue(Task(id="paused-work", func="noop"))
        waiter = children("wait_work", url)
        assert (await waiter.amessage())["ready"]
        await anyio.sleep(0.3)  # the child waits: the only ready task is in a paused queue
        await q.set_queue_paused("default", False)
        reply = await waiter.amessage(20)
    assert reply["claimed"] == ["paused-work"]
    assert 0.25 <= reply["elapsed"] < 5.0, f"woken after {reply['elapsed']:.1f} s (poll is 30 s)"
