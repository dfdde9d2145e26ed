"""Worker processes and a producer on one store: what every fault test stands on.

:class:`Cluster` starts ``omniq worker <app>`` processes with the ``OMNIQ_*``
variables of a backend's ``fault_env`` fixture (nothing else of the caller's
``OMNIQ_*`` environment leaks in), gives a producer :class:`~omniq.OmniQ` in
the test's process on the same store, and counts completions: each task of
the suite's app (:mod:`omniq.testing.faults.app`) appends ``"<n> <pid>"`` to
``$FAULT_LOG`` when it completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ, Settings, plugins
from omniq.base import BaseTaskQueue

__all__ = ["APP", "FAULT_TIMINGS", "Cluster", "FaultTests", "settings_of", "task_queue_of", "wait_for"]


#: the worker app the suite runs (``omniq worker omniq.testing.faults.app:app``).
APP = "omniq.testing.faults.app:app"

#: short leases, so that recovery tests finish quickly (lease + sweep + 1 s is the promise).
FAULT_TIMINGS = {
    "OMNIQ_LEASE_DURATION": "1.5",
    "OMNIQ_HEARTBEAT_INTERVAL": "0.4",
    "OMNIQ_SWEEP_INTERVAL": "0.3",
    "OMNIQ_POLL_INTERVAL": "0.3",
    "OMNIQ_RETRY_BACKOFF": "0.05",
    "OMNIQ_RETRY_BACKOFF_MAX": "0.1",
}


def settings_of(env: Mapping[str, str]) -> Settings:
    """The :class:`~omniq.Settings` that ``OMNIQ_*`` variables ``env`` give, and nothing else of the environment."""
    overrides = {name[len("OMNIQ_") :].lower(): value for name, value in env.items() if name.startswith("OMNIQ_")}
    return Settings.load(env={}, **overrides)


def task_queue_of(env: Mapping[str, str]) -> BaseTaskQueue:
    """A new, unconnected task queue built as a worker would build it from ``env`` (``OMNIQ_*`` variables)."""
    settings = settings_of(env)
    component = settings.component("task_queue")
    queue: BaseTaskQueue = plugins.resolve_backend("task_queue", component.type).from_settings(component, settings)
    return queue


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``condition`` until it returns something truthy, and return that; fail the test after ``timeout`` s.

    Typed loosely on purpose: ``condition`` is often ``lambda: x and y``, whose truthy value is ``y``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


class Cluster:
    """Worker processes and a producer app against one store.

    Args:
        env: the ``OMNIQ_*`` variables of the store (a backend's ``fault_env``); they
            override :data:`FAULT_TIMINGS`. ``cluster.env`` may be changed before a worker starts.
        tmp_path: a directory of the test's own (the completions log lives there).
        app: the app the workers run, ``module:attribute``.
        pythonpath: directories the workers import from, before the caller's ``PYTHONPATH``.
        cwd: the workers' working directory (default: ``tmp_path``).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        tmp_path: Path,
        *,
        app: str = APP,
        pythonpath: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> None:
        self.app = app
        self.cwd = cwd or tmp_path
        self.log = tmp_path / "completions.log"
        self.log.touch()
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("OMNIQ_")}
        path = [*pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env: dict[str, str] = {**inherited, **FAULT_TIMINGS, **env, "FAULT_LOG": str(self.log)}
        if path:
            self.env["PYTHONPATH"] = os.pathsep.join(path)
        self.workers: list[subprocess.Popen[str]] = []
        self.settings = settings_of({**FAULT_TIMINGS, **env})

    def producer(self) -> OmniQ:
        """An app in this process, on the same store, that enqueues by task name (the functions live in the workers)."""
        return OmniQ(self.settings)

    def worker(self, *args: str, log_file: Path | None = None) -> subprocess.Popen[str]:
        """Start ``omniq worker <app> *args``; its output goes to a pipe, or to ``log_file`` when given.

        Long-running workers that nobody reads should log to a file: a full pipe would block them.
        """
        output = log_file.open("w") if log_file is not None else None
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "omniq", "--log-level", "INFO", "worker", self.app, *args],
                env=self.env,
                cwd=str(self.cwd),
                stdout=output or subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own descriptor
        self.workers.append(process)
        return process

    def python(self, code: str, *args: str) -> subprocess.Popen[Any]:
        """Start ``python -c code *args`` with the workers' environment (another producer process, say)."""
        return subprocess.Popen([sys.executable, "-c", code, *args], env=self.env, cwd=str(self.cwd))

    def completions(self) -> Counter[int]:
        """How many times each task number completed (from ``$FAULT_LOG``)."""
        return Counter(int(line.split()[0]) for line in self.log.read_text().splitlines() if line.strip())

    def stop_all(self) -> None:
        """Kill every worker still running and reap them all."""
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(10)
            if process.stdout:
                process.stdout.close()


class FaultTests:
    """What every area of the fault suite stands on: the backend's ``fault_env``, and a :class:`Cluster` on it.

    The test class provides ``fault_env``: a (synchronous) fixture returning, or
    yielding, the ``OMNIQ_*`` variables that point all three components at a
    store private to the test, and deleting that store afterwards.
    """

    #: the app the workers run (its tasks are what the tests enqueue by name).
    worker_app: str = APP

    @pytest.fixture
    def cluster(self, fault_env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
        """A :class:`Cluster` on ``fault_env``; every worker it started is killed after the test."""
        cluster = Cluster(fault_env, tmp_path, app=self.worker_app)
        try:
            yield cluster
        finally:
            cluster.stop_all()
