"""The web examples run as users run them: a server process answering HTTP, and the worker that runs its tasks.

``examples/fastapi_app.py`` runs its worker inside the server; ``examples/flask_app.py`` needs an
``omniq worker`` process beside it. Both on the embedded default (SQLite), in a directory of the test's own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

#: the examples that serve until stopped (not run to completion by test_examples.py).
SERVED = {"fastapi_app.py", "flask_app.py"}

Start = Callable[..., subprocess.Popen[str]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _wait_until_served(port: int, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answered on port {port} within {timeout} s")


def _wait_for_result(base: str, task_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = _call(f"{base}/tasks/{task_id}")
        assert status == 200, body
        if body["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start a process as a user would, from the repository root, on a SQLite store of this test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env |= {"OMNIQ_BASE_DIR": str(tmp_path / "data"), "OMNIQ_POLL_INTERVAL": "0.2", "PYTHONPATH": str(ROOT)}
    started: list[subprocess.Popen[str]] = []

    def run(*args: str, port: int | None = None) -> subprocess.Popen[str]:
        log = (tmp_path / f"process-{len(started)}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, *args],
            env=env | ({"PORT": str(port)} if port else {}),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_fastapi_example_runs_its_tasks_in_the_server(start: Start, tmp_path: Path) -> None:
    port = _free_port()
    server = start(str(EXAMPLES / "fastapi_app.py"), port=port)
    _wait_until_served(port, server)
    base = f"http://127.0.0.1:{port}"
    status, body = _call(f"{base}/counts", {"text": "to be or not to be"})
    assert status == 202, body
    assert _wait_for_result(base, body["task_id"]) == {
        "task_id": body["task_id"],
        "status": "succeeded",
        "result": {"to": 2, "be": 2, "or": 1},
        "error": None,
    }
    assert _call(f"{base}/tasks/nope")[0] == 404
    server.send_signal(signal.SIGINT)  # Ctrl-C: the lifespan stops the worker and closes the app
    assert server.wait(60) == 0
    log = (tmp_path / "process-0.log").read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log, log


def test_the_flask_example_and_an_omniq_worker_process(start: Start, tmp_path: Path) -> None:
    port = _free_port()
    server = start(str(EXAMPLES / "flask_app.py"), port=port)
    start("-m", "omniq", "worker", "examples.flask_app:omniq")
    _wait_until_served(port, server)
    base = f"http://127.0.0.1:{port}"
    status, body = _call(f"{base}/invoices", {"customer": "acme", "amounts": [3, 4.5]})
    assert status == 202, body
    result = _wait_for_result(base, body["task_id"])
    assert result["status"] == "succeeded", result
    assert result["result"] == {"customer": "acme", "lines": 2, "total": 7.5}
    assert _call(f"{base}/tasks/nope")[0] == 404
