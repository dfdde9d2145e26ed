"""A real ``omniq worker`` process logs what happens to each task, as text or as JSON lines.

The app is written to the test's own directory; the engine is SQLite (one
file the producer in this process and the worker process share).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ, Settings
from omniq.models import TaskStatus

APP = """
import asyncio

from omniq import OmniQ

app = OmniQ()


@app.task(name="ok")
async def ok() -> int:
    return 1


@app.task(name="boom")
async def boom() -> None:
    raise ValueError("kaput")


@app.task(name="sleepy")
async def sleepy() -> None:
    await asyncio.sleep(10)
"""

TIMINGS = {
    "OMNIQ_LEASE_DURATION": "1.5",
    "OMNIQ_HEARTBEAT_INTERVAL": "0.2",
    "OMNIQ_SWEEP_INTERVAL": "0.3",
    "OMNIQ_POLL_INTERVAL": "0.1",
    "OMNIQ_RETRY_BACKOFF": "0.05",
    "OMNIQ_RETRY_BACKOFF_MAX": "0.1",
    "OMNIQ_SHUTDOWN_GRACE": "0.2",
}


class Worker:
    """An ``omniq worker logapp:app`` process whose output goes to a file."""

    def __init__(self, tmp_path: Path, *args: str, level: str | None = "DEBUG") -> None:
        (tmp_path / "logapp.py").write_text(APP)
        self.base_dir = tmp_path / "data"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")},
            **TIMINGS,
            "OMNIQ_BACKEND": "sqlite",
            "OMNIQ_BASE_DIR": str(self.base_dir),
            "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        }
        self.args = args
        self.level = ["--log-level", level] if level is not None else []
        self.tmp_path = tmp_path
        self.output = tmp_path / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def producer(self) -> OmniQ:
        overrides = {k[len("OMNIQ_") :].lower(): v for k, v in self.env.items() if k.startswith("OMNIQ_")}
        return OmniQ(Settings.load(env={}, **overrides))

    def start(self) -> None:
        command = [sys.executable, "-m", "omniq", *self.level, "worker", "logapp:app", *self.args]
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(command, env=self.env, cwd=self.tmp_path, stdout=out, stderr=out)

    def text(self) -> str:
        return self.output.read_text()

    def wait_for(self, *needles: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(needle in self.text() for needle in needles):
            assert self.process is not None
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"worker output lacks {needles}:\n{self.text()}")
            time.sleep(0.05)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)


def _wait_running(app: OmniQ, *task_ids: str) -> None:
    deadline = time.monotonic() + 20
    while not all(_status(app, task_id) is TaskStatus.RUNNING for task_id in task_ids):
        assert time.monotonic() < deadline, [_status(app, task_id) for task_id in task_ids]
        time.sleep(0.05)


def _status(app: OmniQ, task_id: str) -> TaskStatus | None:
    task = app.get_task(task_id)
    return task.status if task is not None else None


def _line(text: str, *parts: str) -> str:
    matches = [line for line in text.splitlines() if all(part in line for part in parts)]
    assert matches, f"no line with {parts}:\n{text}"
    return matches[0]


def test_each_kind_of_task_line_in_a_worker_process(tmp_path: Path) -> None:
    worker = Worker(tmp_path, "--concurrency", "4")
    with worker.producer() as app:
        expired = app.enqueue("ok", ttl=0.05)
        time.sleep(0.3)  # its ttl passes before the worker starts
        ok = app.enqueue("ok")
        boom = app.enqueue("boom", max_retries=1)
        sleepy = app.enqueue("sleepy", timeout=0.2, max_retries=0)
        cancelled = app.enqueue("sleepy")
        released = app.enqueue("sleepy")
        worker.start()
        try:
            _wait_running(app, cancelled, released)
            worker.wait_for(f"task {ok} (ok, queue default, attempt 1) succeeded in ")
            worker.wait_for(f"task {boom} (boom, queue default, attempt 2) failed: ValueError: kaput")
            assert app.cancel(cancelled)
            worker.wait_for(f"task {cancelled} (sleepy, queue default, attempt 1) lost its lease")
        finally:
            assert worker.stop() == 0
    text = worker.text()
    assert " INFO " in _line(text, f"task {ok} ", "succeeded in ")
    assert " WARNING " in _line(text, f"task {boom} ", "attempt 1) failed: ValueError: kaput; retrying in ")
    assert " ERROR " in _line(text, f"task {boom} ", "attempt 2) failed: ValueError: kaput")
    assert " DEBUG " in _line(text, f"task {boom} ", "traceback")
    assert 'raise ValueError("kaput")' in text
    assert " ERROR " in _line(text, f"task {sleepy} (sleepy, queue default, attempt 1) failed: TaskTimeoutError")
    assert " WARNING " in _line(text, f"task {expired} (ok, queue default", "expired: its ttl passed")
    assert " WARNING " in _line(text, f"task {cancelled} ", "lost its lease")
    assert " INFO " in _line(text, f"task {released} (sleepy, queue default, attempt 1) released")


def test_json_lines_parse_and_carry_the_task_fields(tmp_path: Path) -> None:
    worker = Worker(tmp_path, "--burst", "--log-format", "json")
    with worker.producer() as app:
        ok = app.enqueue("ok")
        boom = app.enqueue("boom", max_retries=0)
    worker.start()
    assert worker.process is not None and worker.process.wait(30) == 0
    records: list[dict[str, Any]] = []
    for line in worker.text().splitlines():
        if line.startswith("worker stopped:"):  # the command's own summary on stdout, not a log line
            continue
        records.append(json.loads(line))
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    [success] = [r for r in records if r.get("task_id") == ok]
    assert success["level"] == "INFO" and success["logger"] == "omniq.worker.tasks"
    assert success["task"] == "ok" and success["queue"] == "default" and success["attempt"] == 1
    assert success["runtime"] >= 0 and success["message"].endswith("s") and "succeeded in" in success["message"]
    [failure] = [r for r in records if r.get("task_id") == boom and r["level"] == "ERROR"]
    assert failure["error_type"] == "ValueError" and failure["error"] == "kaput"
    assert 'raise ValueError("kaput")' in failure["traceback"]


def test_by_default_a_worker_logs_failures_but_not_each_success(tmp_path: Path) -> None:
    """Without --log-level the task lines stop at WARNING: a success line per task costs too much by default."""
    worker = Worker(tmp_path, "--burst", level=None)
    with worker.producer() as app:
        ok = app.enqueue("ok")
        boom = app.enqueue("boom", max_retries=0)
    worker.start()
    assert worker.process is not None and worker.process.wait(30) == 0
    text = worker.text()
    assert " ERROR " in _line(text, f"task {boom} (boom, queue default, attempt 1) failed: ValueError: kaput")
    assert ok not in text
    assert "started: queues=default" in text  # the worker's own INFO lines stay
