"""Fault tests: real worker processes (`omniq worker ... `) on every multi-process backend.

A backend joins by adding a parametrization to ``backend_env`` that returns
the OMNIQ_* variables pointing all three components at an isolated store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ, Settings

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


@pytest.fixture(params=["sqlite", "file"])
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """OMNIQ_* variables for one backend, isolated to this test."""
    if request.param in ("sqlite", "file"):
        return {"OMNIQ_BACKEND": request.param, "OMNIQ_BASE_DIR": str(tmp_path / "data")}
    raise AssertionError(request.param)  # pragma: no cover


class Cluster:
    """Starts worker processes and a producer app against one backend."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.log = tmp_path / "completions.log"
        self.log.touch()
        self.env = {**os.environ, **FAULT_TIMINGS, **env, "FAULT_LOG": str(self.log),
                    "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        self.workers: list[subprocess.Popen[str]] = []
        overrides = {k[len("OMNIQ_"):].lower(): v for k, v in {**FAULT_TIMINGS, **env}.items()}
        self.settings = Settings.load(env={}, **overrides)

    def producer(self) -> OmniQ:
        """An app in this process that enqueues by task name (the functions live in faultapp)."""
        return OmniQ(self.settings)

    def worker(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "omniq", "--log-level", "INFO", "worker", "faultapp:app", *args],
            env=self.env, cwd=str(HERE), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
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
