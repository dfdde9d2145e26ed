"""omniq.contrib.flask: the extension through Flask's test client, with real workers, on SQLite and Redis."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

from omniq import AsyncOmniQ, ConfigurationError, OmniQ, Settings, TaskStatus
from omniq.contrib.flask import FlaskOmniQ, current_omniq, get_omniq

Start = Callable[..., subprocess.Popen[str]]


def add(a: int, b: int) -> int:
    return a + b


@pytest.fixture
def omniq(settings: Settings) -> Iterator[OmniQ]:
    app = OmniQ(settings)
    app.register(add, name="add")
    yield app
    app.close()


def make_flask(extension: FlaskOmniQ) -> Flask:
    """A small app: enqueue ``add``, read a task's status and result, through ``current_omniq``."""
    app = Flask(__name__)
    extension.init_app(app)

    @app.post("/add")
    def enqueue_add() -> dict[str, str]:
        body = request.get_json()
        return {"task_id": current_omniq.enqueue("add", body["a"], body["b"])}

    @app.get("/tasks/<task_id>")
    def task_status(task_id: str) -> dict[str, Any]:
        result = current_omniq.get_result(task_id)
        if result is None:
            task = current_omniq.get_task(task_id)
            if task is None or task.status in (TaskStatus.PENDING, TaskStatus.RUNNING):
                return {"status": task.status.value if task else "unknown"}
            result = current_omniq.get_result(task_id, wait=True, timeout=5)  # finished between the reads
        if result is not None:
            return {"status": result.status.value, "result": result.result}
        task = current_omniq.get_task(task_id)
        return {"status": task.status.value if task else "unknown"}

    return app


def wait_for(client: FlaskClient, task_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the status endpoint until the task is in one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json  # type: ignore[assignment]
        if body["status"] in statuses or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_a_request_enqueues_and_a_worker_drains(omniq: OmniQ) -> None:
    client = make_flask(FlaskOmniQ(omniq=omniq)).test_client()
    task_ids = [client.post("/add", json={"a": n, "b": n}).json["task_id"] for n in range(3)]  # type: ignore[index]
    assert [client.get(f"/tasks/{t}").json for t in task_ids] == [{"status": "pending"}] * 3
    omniq.run_worker(burst=True)  # a real worker pool, in this process: drains what the requests enqueued
    assert [client.get(f"/tasks/{t}").json for t in task_ids] == [
        {"status": "succeeded", "result": n + n} for n in range(3)
    ]


def test_an_omniq_worker_process_runs_what_a_request_enqueued(app_env: dict[str, str], start_worker: Start) -> None:
    omniq = OmniQ(Settings(backend="sqlite", base_dir=Path(app_env["OMNIQ_BASE_DIR"]), poll_interval=0.2))
    extension = FlaskOmniQ(omniq=omniq)
    try:
        client = make_flask(extension).test_client()
        start_worker()  # omniq worker contribapp:app, on the same SQLite store; it registers "add" too
        task_id = client.post("/add", json={"a": 20, "b": 22}).json["task_id"]  # type: ignore[index]
        assert wait_for(client, task_id, "succeeded", "failed") == {"status": "succeeded", "result": 42}
    finally:
        extension.close()


def test_requests_share_one_connection_that_outlives_them(omniq: OmniQ) -> None:
    client = make_flask(FlaskOmniQ(omniq=omniq)).test_client()
    client.post("/add", json={"a": 1, "b": 1})
    queue = omniq.async_app.task_queue  # connected by the first request
    for n in range(3):
        client.post("/add", json={"a": n, "b": n})
    # Closing (per request, or per app context) would have dropped it: the next use would build another.
    assert omniq.async_app.task_queue is queue
    assert omniq.count_tasks() == 4


def test_init_app_builds_an_omniq_from_the_config_of_each_app(tmp_path: Path) -> None:
    extension = FlaskOmniQ()
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config |= {"OMNIQ_BACKEND": "sqlite", "OMNIQ_BASE_DIR": str(tmp_path / name), "OMNIQ_MAX_WORKERS": 3}
        apps.append((app, extension.init_app(app)))
    try:
        for app, omniq in apps:
            assert app.extensions["omniq"] is omniq and get_omniq(app) is omniq
            assert omniq.settings.max_workers == 3 and omniq.settings.base_dir == tmp_path / app.name
            with app.app_context():
                assert get_omniq() is omniq
                current_omniq.enqueue(add, 1, 2)
            assert omniq.count_tasks() == 1
        assert apps[0][1] is not apps[1][1]
    finally:
        extension.close()
    with pytest.raises(RuntimeError, match="closed"):
        apps[0][1].count_tasks()
    extension.close()  # idempotent


def test_misuse_gets_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"no OmniQ is bound to the Flask app 'bare': FlaskOmniQ\(app, omniq\)"):
        get_omniq(Flask("bare"))
    app = Flask("taken")
    first, second = OmniQ(backend="memory"), OmniQ(backend="memory")
    try:
        FlaskOmniQ(app, first)
        FlaskOmniQ(app, first)  # the same one again is fine
        with pytest.raises(RuntimeError, match="an OmniQ is bound to the Flask app 'taken' already"):
            FlaskOmniQ(app, second)
    finally:
        first.close()
        second.close()
    with pytest.raises(TypeError, match="expected an OmniQ, got AsyncOmniQ"):
        FlaskOmniQ(omniq=AsyncOmniQ(backend="memory"))  # type: ignore[arg-type]
    bad = Flask("bad")
    bad.config["OMNIQ_NOT_A_SETTING"] = 1
    with pytest.raises(ConfigurationError, match="not_a_setting"):
        FlaskOmniQ(bad)


def test_importing_it_without_flask_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flask", None)  # what an environment without Flask looks like to import
    monkeypatch.delitem(sys.modules, "omniq.contrib.flask")
    with pytest.raises(ImportError, match=r"pip install './packages/omniq-core\[flask\]'"):
        importlib.import_module("omniq.contrib.flask")
