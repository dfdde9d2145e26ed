"""Fault tests: real worker processes (`omniq worker ... `) on every multi-process backend.

A backend joins by adding a parametrization to ``backend_env`` that returns
the OMNIQ_* variables pointing all three components at an isolated store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from omniq import OmniQ, Settings
from omniq.config import COMPONENTS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

HERE = Path(__file__).parent

#: short leases so that recovery tests finish quickly (lease + sweep + 1 s is the promise).
FAULT_TIMINGS = {
    "OMNIQ_LEASE_DURATION": "1.5",
    "OMNIQ_HEARTBEAT_INTERVAL": "0.4",
    "OMNIQ_SWEEP_INTERVAL": "0.3",
    "OMNIQ_POLL_INTERVAL": "0.3",
    "OMNIQ_RETRY_BACKOFF": "0.05",
    "OMNIQ_RETRY_BACKOFF_MAX": "0.1",
}


SERVER_BACKENDS = ("redis", "postgres", "nats")


@pytest.fixture(
    params=[
        "sqlite",
        "file",
        pytest.param("redis", marks=pytest.mark.servers),
        pytest.param("postgres", marks=pytest.mark.servers),
        pytest.param("nats", marks=pytest.mark.servers),
    ]
)
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """OMNIQ_* variables for one backend, isolated to this test (server data is dropped afterwards)."""
    if request.param in ("sqlite", "file"):
        yield {"OMNIQ_BACKEND": request.param, "OMNIQ_BASE_DIR": str(tmp_path / "data")}
        return
    if request.param not in SERVER_BACKENDS:  # pragma: no cover
        raise AssertionError(request.param)
    url: str = request.getfixturevalue(f"{request.param}_url")
    with server_env(request.param, url, tmp_path) as env:
        yield env


@contextlib.contextmanager
def server_env(backend: str, url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """OMNIQ_* variables for a server backend under a fresh prefix; the prefix's data is dropped on exit."""
    # one name serves as Redis key prefix, PostgreSQL schema and NATS stream/bucket prefix
    prefix = f"omniq_fault_{uuid.uuid4().hex[:12]}"
    env = {
        "OMNIQ_BACKEND": backend,
        "OMNIQ_URL": url,
        "OMNIQ_KEY_PREFIX": prefix,
        "OMNIQ_BASE_DIR": str(tmp_path / "data"),
    }
    if backend == "postgres":
        # explicit, although the schema defaults to the key prefix
        options = json.dumps({"schema": prefix})
        env |= {f"OMNIQ_{component.upper()}_OPTIONS": options for component in COMPONENTS}
    try:
        yield env
    finally:
        asyncio.run(drop_server_data(backend, url, prefix))


async def drop_server_data(backend: str, url: str, prefix: str) -> None:
    """Delete everything a test stored on a server under ``prefix``."""
    if backend == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        try:
            # every key of the prefix contains it: "{P:q}:...", "{P}:...", "P:r:..." and "P:events"
            doomed = [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
            if doomed:
                await client.unlink(*doomed)
        finally:
            await client.aclose()
    elif backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE')
        finally:
            await conn.close()
    else:
        from omniq_nats import drop_prefix

        await drop_prefix(url, prefix)


class Cluster:
    """Starts worker processes and a producer app against one backend."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.log = tmp_path / "completions.log"
        self.log.touch()
        self.env = {
            **os.environ,
            **FAULT_TIMINGS,
            **env,
            "FAULT_LOG": str(self.log),
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        self.workers: list[subprocess.Popen[str]] = []
        overrides = {k[len("OMNIQ_") :].lower(): v for k, v in {**FAULT_TIMINGS, **env}.items()}
        self.settings = Settings.load(env={}, **overrides)

    def producer(self) -> OmniQ:
        """An app in this process that enqueues by task name (the functions live in faultapp)."""
        return OmniQ(self.settings)

    def worker(self, *args: str, log_file: Path | None = None) -> subprocess.Popen[str]:
        """Start ``omniq worker faultapp:app``; its output goes to a pipe, or to ``log_file`` when given.

        Long-running workers that nobody reads should log to a file: a full pipe would block them.
        """
        output = log_file.open("w") if log_file is not None else None
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "omniq", "--log-level", "INFO", "worker", "faultapp:app", *args],
                env=self.env,
                cwd=str(HERE),
                stdout=output or subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own descriptor
        self.workers.append(process)
        return process

    def completions(self) -> Counter[int]:
        return Counter(int(line.split()[0]) for line in self.log.read_text().splitlines() if line.strip())

    def stop_all(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(10)
            if process.stdout:
                process.stdout.close()


@pytest.fixture
def cluster(backend_env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    """A Cluster for this test; every worker it started is killed afterwards."""
    c = Cluster(backend_env, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")
