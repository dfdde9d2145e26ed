"""Real worker processes while the real Redis, PostgreSQL and NATS servers restart under them.

These tests stop and start the machine's shared servers (the exact commands
the machine uses), so they are marked ``restarts_servers`` as well as
``slow``: deselect them with ``-m "not restarts_servers"`` when other work
uses the servers. Every test leaves its server running, even when it fails.
Outages are kept to a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from omniq import TaskStatus
from omniq.errors import BackendUnavailableError

from .conftest import Cluster, server_env, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from omniq import OmniQ

pytestmark = [pytest.mark.slow, pytest.mark.servers]

#: leases that outlive an outage of a few seconds (heartbeats fail while the server is down).
RESTART_TIMINGS = {
    "OMNIQ_LEASE_DURATION": "20",
    "OMNIQ_HEARTBEAT_INTERVAL": "2",
    "OMNIQ_SWEEP_INTERVAL": "1",
    "OMNIQ_POLL_INTERVAL": "0.5",
}

#: seconds a server may take to stop or to answer again.
SERVER_TIMEOUT = 60.0


def _postgres_cluster() -> tuple[str, str]:
    """(version, name) of the machine's PostgreSQL cluster, as pg_ctlcluster wants them."""
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    return (versions[-1] if versions else "15", "main")


@dataclasses.dataclass(frozen=True)
class Server:
    """A local server and the machine's own commands to stop and start it."""

    name: str
    port: int
    stop_command: tuple[str, ...]
    start_command: tuple[str, ...]

    def answers(self) -> bool:
        """Whether something accepts TCP connections on the server's port."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _wait(self, up: bool) -> None:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while time.monotonic() < deadline:
            if self.answers() is up:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not {'start' if up else 'stop'} within {SERVER_TIMEOUT} s")

    def stop(self) -> None:
        """Stop the server and wait until its port is closed."""
        subprocess.run(self.stop_command, check=False, timeout=SERVER_TIMEOUT, capture_output=True)
        self._wait(up=False)

    def start(self) -> None:
        """Start the server (if it is not answering) and wait until its port answers."""
        if not self.answers():
            subprocess.run(self.start_command, check=True, timeout=SERVER_TIMEOUT, capture_output=True)
        self._wait(up=True)

    @contextlib.contextmanager
    def outage(self, seconds: float = 2.0) -> Iterator[None]:
        """Stop the server for the body of the ``with`` (at least ``seconds``); always start it again."""
        try:
            self.stop()
            began = time.monotonic()
            yield
            time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        finally:
            self.start()


_PG_VERSION, _PG_NAME = _postgres_cluster()

REDIS = Server(
    "redis",
    6379,
    ("redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"),
    (
        "redis-server",
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "-::1",
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        "/var/lib/redis",
        "--logfile",
        "/var/log/redis/ci.log",
    ),
)
POSTGRES = Server(
    "postgres",
    5432,
    ("pg_ctlcluster", "--skip-systemctl-redirect", _PG_VERSION, _PG_NAME, "stop"),
    ("pg_ctlcluster", "--skip-systemctl-redirect", _PG_VERSION, _PG_NAME, "start"),
)
NATS = Server(
    "nats",
    4222,
    ("start-stop-daemon", "--stop", "--retry", "30", "--exec", "/usr/sbin/nats-server"),
    (
        "start-stop-daemon",
        "--start",
        "--oknodo",
        "--background",
        "--exec",
        "/usr/sbin/nats-server",
        "--",
        "-a",
        "127.0.0.1",
        "-p",
        "4222",
        "-js",
        "-sd",
        "/var/lib/nats-server",
        "-l",
        "/var/log/nats-server.log",
    ),
)


def _require_local(server: Server, url: str) -> None:
    """Skip unless ``url`` is the local server these commands control and the commands exist."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or (parts.port or server.port) != server.port:
        pytest.skip(f"{server.name} under test is not the local server on port {server.port}")
    if shutil.which(server.stop_command[0]) is None or shutil.which(server.start_command[0]) is None:
        pytest.skip(f"cannot restart {server.name} here: {server.stop_command[0]} is not installed")
    if os.geteuid() != 0:
        pytest.skip(f"restarting {server.name} needs root (the machine's service commands)")


@contextlib.contextmanager
def restart_cluster(backend: str, url: str, tmp_path: Path, **timings: str) -> Iterator[Cluster]:
    """A Cluster on a fresh prefix with restart-proof leases; workers are killed and data dropped afterwards."""
    with server_env(backend, url, tmp_path) as env:
        cluster = Cluster({**env, **RESTART_TIMINGS, **timings}, tmp_path)
        try:
            yield cluster
        finally:
            cluster.stop_all()


def _worker_logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("worker-*.log")))


def _start_workers(cluster: Cluster, tmp_path: Path, count: int, concurrency: int) -> list[int]:
    workers = [
        cluster.worker("--concurrency", str(concurrency), log_file=tmp_path / f"worker-{i}.log") for i in range(count)
    ]
    return [w.pid for w in workers]


def _assert_workers_alive(cluster: Cluster, tmp_path: Path) -> None:
    exited = [w.pid for w in cluster.workers if w.poll() is not None]
    assert not exited, f"worker(s) {exited} exited during the outage\n{_worker_logs(tmp_path)}"


def _busy_workers_then_backlog(app: OmniQ, cluster: Cluster, tmp_path: Path) -> tuple[list[str], list[str]]:
    """Two single-slot workers each run a slow task; 20 more tasks wait behind them (not yet run)."""
    _start_workers(cluster, tmp_path, count=2, concurrency=1)
    slow = [app.enqueue("slow", 100 + i, 3.0) for i in range(2)]
    try:
        wait_until(
            lambda: all(app.get_task(i).status is TaskStatus.RUNNING for i in slow),  # type: ignore[union-attr]
            30,
            "both slow tasks to start",
        )
    except pytest.fail.Exception:
        states = [(t.status.value, t.attempts, t.worker_id) for t in map(app.get_task, slow) if t is not None]
        pytest.fail(f"the slow tasks did not both start: {states}\n{_worker_logs(tmp_path)}")
    backlog = app.enqueue_many("record", [(n,) for n in range(20)])
    return slow, backlog


def _assert_all_done_once(app: OmniQ, cluster: Cluster, tmp_path: Path, slow: list[str], backlog: list[str]) -> None:
    for task_id in [*slow, *backlog]:
        result = app.get_result(task_id, wait=True, timeout=60)
        assert result is not None, f"task {task_id} has no result 60 s after the restart\n{_worker_logs(tmp_path)}"
        assert result.status is TaskStatus.SUCCEEDED, result
        assert result.attempts == 1, f"task {task_id} ran {result.attempts} times"  # leases outlived the outage
    time.sleep(0.5)  # a duplicate run would show up now
    assert cluster.completions() == dict.fromkeys([*range(20), 100, 101], 1)
    pids = {int(line.split()[1]) for line in cluster.log.read_text().splitlines() if line.strip()}
    assert pids <= {w.pid for w in cluster.workers}
    _assert_workers_alive(cluster, tmp_path)


# -- Redis -------------------------------------------------------------------------------------------


@pytest.mark.restarts_servers
def test_redis_restart_workers_reconnect_and_enqueue_during_outage_raises(redis_url: str, tmp_path: Path) -> None:
    # This Redis keeps nothing on disk: a restart loses every key, so what we promise is that
    # workers reconnect and carry on, and that an enqueue during the outage fails loudly.
    _require_local(REDIS, redis_url)
    with restart_cluster("redis", redis_url, tmp_path) as cluster, cluster.producer() as app:
        (pid,) = _start_workers(cluster, tmp_path, count=1, concurrency=2)
        before = app.get_result(app.enqueue("record", 1), wait=True, timeout=30)
        assert before is not None and before.status is TaskStatus.SUCCEEDED
        with REDIS.outage():
            with pytest.raises(BackendUnavailableError):
                app.enqueue("record", 2)
        _assert_workers_alive(cluster, tmp_path)
        # A fresh producer: the old one's pooled connections are stale, which is
        # test_dropped_connections.py's business; this test is about the worker.
        with cluster.producer() as fresh:
            task_id = fresh.enqueue("record", 3)
            after = fresh.get_result(task_id, wait=True, timeout=60)
        assert after is not None, f"no result 60 s after the restart\n{_worker_logs(tmp_path)}"
        assert after.status is TaskStatus.SUCCEEDED
        _assert_workers_alive(cluster, tmp_path)
    assert cluster.completions() == {1: 1, 3: 1}
    assert {int(line.split()[1]) for line in cluster.log.read_text().splitlines()} == {pid}


# -- PostgreSQL --------------------------------------------------------------------------------------


@pytest.mark.restarts_servers
def test_postgres_restart_loses_nothing_and_workers_carry_on(postgres_url: str, tmp_path: Path) -> None:
    _require_local(POSTGRES, postgres_url)
    with restart_cluster("postgres", postgres_url, tmp_path) as cluster, cluster.producer() as app:
        slow, backlog = _busy_workers_then_backlog(app, cluster, tmp_path)
        with POSTGRES.outage():
            with pytest.raises(BackendUnavailableError):
                app.enqueue("record", 999)
        _assert_all_done_once(app, cluster, tmp_path, slow, backlog)


async def _listen_pids(url: str, channel: str) -> list[int]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND position($1 in query) > 0", channel
        )
        return [row["pid"] for row in rows]
    finally:
        await conn.close()


async def _terminate(url: str, pid: int) -> bool:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval("SELECT pg_terminate_backend($1)", pid))
    finally:
        await conn.close()


def test_postgres_killed_listen_connection_still_wakes_the_worker(postgres_url: str, tmp_path: Path) -> None:
    # Polling every 30 s cannot be what makes a task start within 10 s: only the LISTEN connection can.
    with restart_cluster("postgres", postgres_url, tmp_path, OMNIQ_POLL_INTERVAL="30") as cluster:
        channel = f"{cluster.env['OMNIQ_KEY_PREFIX']}.tasks"
        with cluster.producer() as app:
            _start_workers(cluster, tmp_path, count=1, concurrency=2)
            (first,) = wait_until(lambda: asyncio.run(_listen_pids(postgres_url, channel)), 30, "the worker to LISTEN")
            warm = app.get_result(app.enqueue("record", 1), wait=True, timeout=10)
            assert warm is not None and warm.status is TaskStatus.SUCCEEDED

            assert asyncio.run(_terminate(postgres_url, first))
            task_id = app.enqueue("record", 2)
            result = app.get_result(task_id, wait=True, timeout=10)
            assert result is not None, f"task not run within 10 s of killing LISTEN\n{_worker_logs(tmp_path)}"
            assert result.status is TaskStatus.SUCCEEDED

            # and the worker LISTENs again: the next task is announced, not found by a poll
            (second,) = wait_until(
                lambda: [p for p in asyncio.run(_listen_pids(postgres_url, channel)) if p != first],
                10,
                "the worker to LISTEN again",
            )
            again = app.get_result(app.enqueue("record", 3), wait=True, timeout=10)
            assert again is not None and again.status is TaskStatus.SUCCEEDED
            _assert_workers_alive(cluster, tmp_path)
        assert cluster.completions() == {1: 1, 2: 1, 3: 1}


# -- NATS ----------------------------------------------------------------------------------------------


@pytest.mark.restarts_servers
def test_nats_restart_loses_nothing_and_workers_carry_on(nats_url: str, tmp_path: Path) -> None:
    _require_local(NATS, nats_url)
    with restart_cluster("nats", nats_url, tmp_path) as cluster, cluster.producer() as app:
        slow, backlog = _busy_workers_then_backlog(app, cluster, tmp_path)
        # An enqueue during a NATS outage is test_dropped_connections.py's business (through a proxy):
        # it blocks for the 10 s request timeout, which would make this outage long.
        with NATS.outage():
            pass
        _assert_all_done_once(app, cluster, tmp_path, slow, backlog)
