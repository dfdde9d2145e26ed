"""The operator commands (tasks, inspect --json, cancel, schedules, status --json), in a subprocess."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from omniq import OmniQ, Settings
from tests.core.test_cli import omniq

BOOM_APP = """\
from omniq import OmniQ

app = OmniQ()


@app.task(name="boom", max_retries=0)
def boom(n: int, *, why: str) -> None:
    raise ValueError(f"bad {n}: {why}")


@app.task(name="fine")
def fine(n: int) -> int:
    return n
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["OMNIQ_BASE_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    return env


def _app(tmp_path: Path) -> OmniQ:
    return OmniQ(Settings(base_dir=tmp_path / "data"))


def test_tasks_lists_with_filters_in_a_table_and_as_json(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with _app(tmp_path) as app:
        ids = [app.enqueue("alpha", 1), app.enqueue("beta", 2), app.enqueue("alpha", 3, queue="other")]
    run = omniq("tasks", "--json", env=env)
    assert run.returncode == 0, run.stderr
    listed = json.loads(run.stdout)
    assert sorted(item["id"] for item in listed) == sorted(ids)
    assert {item["status"] for item in listed} == {"pending"}
    only_alpha = json.loads(omniq("tasks", "--name", "alpha", "--json", env=env).stdout)
    assert sorted(item["id"] for item in only_alpha) == sorted([ids[0], ids[2]])
    other = json.loads(omniq("tasks", "--queue", "other", "--json", env=env).stdout)
    assert [item["id"] for item in other] == [ids[2]]
    assert json.loads(omniq("tasks", "--status", "failed", "--json", env=env).stdout) == []
    assert len(json.loads(omniq("tasks", "--limit", "2", "--json", env=env).stdout)) == 2
    table = omniq("tasks", env=env).stdout.splitlines()
    assert table[0].split() == ["id", "name", "queue", "status", "attempts", "created", "error"]
    assert len(table) == 4 and all(task_id in "\n".join(table) for task_id in ids)
    bad = omniq("tasks", "--limit", "0", env=env)
    assert bad.returncode == 2 and "--limit must be at least 1" in bad.stderr


def test_inspect_shows_arguments_and_the_traceback_of_a_failed_task(tmp_path: Path) -> None:
    env = _env(tmp_path)
    (tmp_path / "boomapp.py").write_text(BOOM_APP)
    with _app(tmp_path) as app:
        task_id = app.enqueue("boom", 7, why="testing", unique_key="boom-7")
    worker = omniq("worker", "boomapp:app", "--burst", env=env, cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr
    run = omniq("inspect", task_id, "--json", env=env)
    assert run.returncode == 0, run.stderr
    details = json.loads(run.stdout)
    assert details["status"] == "failed" and details["name"] == "boom"
    assert details["arguments"] == {"args": [7], "kwargs": {"why": "testing"}}
    assert details["unique_key"] == "boom-7"
    assert "ValueError: bad 7: testing" in details["traceback"]
    assert [event["type"] for event in details["events"]][:2] == ["enqueued", "started"]
    text = omniq("inspect", task_id, env=env).stdout
    assert "arguments    (7, why='testing')" in text
    assert "traceback:" in text and "ValueError: bad 7: testing" in text


def test_cancel_cancels_pending_tasks_and_says_which_it_could_not(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with _app(tmp_path) as app:
        first, second = app.enqueue("alpha", 1), app.enqueue("alpha", 2)
    run = omniq("cancel", first, second, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == [f"cancelled {first}", f"cancelled {second}"]
    again = omniq("cancel", first, "no-such-task", env=env)
    assert again.returncode == 1
    assert f"not cancelled {first}" in again.stderr and "not cancelled no-such-task" in again.stderr
    with _app(tmp_path) as app:
        task = app.get_task(first)
        assert task is not None and task.status.value == "cancelled"


def test_schedules_list_pause_resume_and_cancel(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with _app(tmp_path) as app:
        schedule_id = app.enqueue("alpha", 1, interval=timedelta(minutes=5))
        app.enqueue("beta", 2)  # not recurring: not a schedule
    listed = json.loads(omniq("schedules", "--json", env=env).stdout)
    assert [(s["id"], s["interval"], s["paused"]) for s in listed] == [(schedule_id, 300.0, False)]
    assert omniq("schedules", "pause", schedule_id, env=env).stdout.strip() == f"paused {schedule_id}"
    assert json.loads(omniq("schedules", "--json", env=env).stdout)[0]["paused"] is True
    assert "paused" in omniq("schedules", env=env).stdout
    assert omniq("schedules", "resume", schedule_id, env=env).returncode == 0
    assert json.loads(omniq("schedules", "--json", env=env).stdout)[0]["paused"] is False
    assert omniq("schedules", "cancel", schedule_id, env=env).returncode == 0
    assert json.loads(omniq("schedules", "--json", env=env).stdout) == []
    missing = omniq("schedules", "pause", env=env)
    assert missing.returncode == 2 and "needs a SCHEDULE_ID" in missing.stderr
    assert omniq("schedules", "pause", "no-such-id", env=env).returncode == 1


def test_status_and_backends_as_json(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with _app(tmp_path) as app:
        app.enqueue("alpha", 1)
    status = json.loads(omniq("status", "--json", env=env).stdout)
    assert status["counts"]["pending"] == 1 and status["counts"]["failed"] == 0
    assert status["places"][0].startswith("backend: sqlite at ")
    rows = json.loads(omniq("backends", "--json", env=env).stdout)
    sqlite_queue = next(r for r in rows if r["name"] == "sqlite" and r["component"] == "task_queue")
    assert "fused_results" in sqlite_queue["capabilities"] and sqlite_queue["distribution"] == "omniq-sqlite"
