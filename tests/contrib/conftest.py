"""Real worker processes (``omniq worker tests/contrib/contribapp:app``) on SQLite, and a /metrics scraper."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from omniq import Settings
from tests.conftest import drop_redis_keys

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` on ``port`` as {(sample name, labels): value}; empty while nothing answers."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


@pytest.fixture
def app_env(tmp_path: Path) -> dict[str, str]:
    """OMNIQ_* variables for a SQLite store of this test's own, shared by the test and its workers."""
    return {
        "OMNIQ_BACKEND": "sqlite",
        "OMNIQ_BASE_DIR": str(tmp_path / "data"),
        "OMNIQ_POLL_INTERVAL": "0.2",
        "OMNIQ_HEARTBEAT_INTERVAL": "0.3",  # the in-flight gauge is sampled at the heartbeat
    }


@pytest.fixture
def start_worker(app_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``omniq worker contribapp:app ARGS`` (output in worker.log); each one is stopped afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        with (tmp_path / "worker.log").open("a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "omniq", "worker", "contribapp:app", *args],
                env={**os.environ, **app_env, **(env or {})},
                cwd=str(HERE),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.servers)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """(Web framework tests) settings of a store of this test's own: a SQLite directory, or a unique key prefix on Redis (deleted after)."""
    if request.param == "sqlite":
        yield Settings(backend="sqlite", base_dir=tmp_path / "data", poll_interval=0.2)
        return
    url: str = request.getfixturevalue("redis_url")
    prefix = f"omniq-test-{uuid.uuid4().hex[:12]}"
    yield Settings(backend="redis", url=url, key_prefix=prefix, poll_interval=0.2)
    drop_redis_keys(url, prefix)
