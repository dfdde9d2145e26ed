"""The operator commands (tasks, inspect, cancel, retry, queues, workers, schedules, status), in a subprocess."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

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


FLAKY_APP = """\
import os

from omniq import OmniQ

app = OmniQ()


@app.task(name="flaky", max_retries=0)
def flaky(n: int) -> int:
    marker = os.path.join(os.path.dirname(__file__), f"ran-{n}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError(f"first run of {n} fails")
    return n
"""


def _failed_flaky_tasks(tmp_path: Path, env: dict[str, str], count: int, **options: Any) -> list[str]:
    """``count`` flaky tasks, run once by a burst worker: each FAILED now, and succeeds when run again."""
    (tmp_path / "flakyapp.py").write_text(FLAKY_APP)
    with _app(tmp_path) as app:
        ids = [app.enqueue("flaky", n, max_retries=0, **options) for n in range(count)]
    queues = ["--queues", options["queue"]] if "queue" in options else []
    worker = omniq("worker", "flakyapp:app", "--burst", *queues, env=env, cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr
    return ids


def _statuses(tmp_path: Path, ids: list[str]) -> list[str]:
    with _app(tmp_path) as app:
        return [task.status.value for task in (app.get_task(task_id) for task_id in ids) if task is not None]


def test_retry_runs_failed_tasks_again_and_says_which_it_could_not(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first, second = _failed_flaky_tasks(tmp_path, env, 2)
    assert _statuses(tmp_path, [first, second]) == ["failed", "failed"]
    run = omniq("retry", first, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"retried {first}"
    again = omniq("retry", first, "no-such-task", env=env)  # pending now, and unknown
    assert again.returncode == 1
    assert f"not retried {first}" in again.stderr and "not retried no-such-task" in again.stderr
    assert _statuses(tmp_path, [first, second]) == ["pending", "failed"]
    assert omniq("worker", "flakyapp:app", "--burst", env=env, cwd=tmp_path).returncode == 0
    assert _statuses(tmp_path, [first, second]) == ["succeeded", "failed"]
    details = json.loads(omniq("inspect", first, "--json", env=env).stdout)
    types = [event["type"] for event in details["events"]]
    assert "failed" in types[: types.index("requeued")] and types[-1] == "succeeded"
    assert omniq("retry", env=env).returncode == 2  # neither ids nor --all-failed
    assert omniq("retry", first, "--all-failed", env=env).returncode == 2
    assert omniq("retry", first, "--queue", "q", env=env).returncode == 2


def test_retry_all_failed_of_a_queue_shows_progress_lines_off_a_terminal(tmp_path: Path) -> None:
    env = _env(tmp_path)
    mail = _failed_flaky_tasks(tmp_path, env, 12, queue="mail")
    with _app(tmp_path) as app:
        other = app.enqueue("boom-elsewhere", queue="other")
        assert app.cancel(other)  # cancelled, not failed: --all-failed leaves it
    run = omniq("retry", "--all-failed", "--queue", "mail", env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "retried 12 of 12 task(s)"
    assert "retrying: 12/12" in run.stderr.splitlines()  # plain progress lines: stderr is not a terminal
    assert set(_statuses(tmp_path, mail)) == {"pending"} and _statuses(tmp_path, [other]) == ["cancelled"]
    none_left = omniq("retry", "--all-failed", env=env)
    assert none_left.returncode == 0 and none_left.stdout.strip() == "retried 0 of 0 task(s)"


def test_tasks_pages_by_cursor_and_filters_by_time(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with _app(tmp_path) as app:
        ids = [app.enqueue("alpha", n) for n in range(5)]
        created = {task.id: task.created_at for task in app.list_tasks(limit=10)}
    first = omniq("tasks", "--limit", "2", env=env)
    cursor = first.stderr.strip().rpartition("--after ")[2]
    assert first.returncode == 0 and cursor, first.stderr
    pages, after = [], None
    while True:
        args = ["tasks", "--limit", "2", "--json", *(["--after", after] if after else [])]
        page = json.loads(omniq(*args, env=env).stdout)
        if not page:
            break
        pages += [item["id"] for item in page]
        after = page[-1]["cursor"]
        with _app(tmp_path) as app:
            app.enqueue("alpha", 99)  # newer than the walk: never on a later page
    assert pages == ids[::-1]
    assert json.loads(omniq("tasks", "--after", cursor, "--json", env=env).stdout)[0]["id"] == ids[2]
    middle = created[ids[2]].isoformat()
    since = [
        item["id"]
        for item in json.loads(omniq("tasks", "--since", middle, "--name", "alpha", "--json", env=env).stdout)
    ]
    until = [item["id"] for item in json.loads(omniq("tasks", "--until", middle, "--json", env=env).stdout)]
    assert ids[2] in since and ids[2] not in until and ids[0] in until
    bad = omniq("tasks", "--after", "garbage", env=env)
    assert bad.returncode == 2 and "not a page cursor" in bad.stderr
    assert omniq("tasks", "--since", "yesterday", env=env).returncode == 2


def test_queues_and_workers_as_tables_and_json(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _failed_flaky_tasks(tmp_path, env, 1)
    with _app(tmp_path) as app:
        app.enqueue("alpha", 1, queue="later")
        shared = app.shared_worker_registry
    queues = json.loads(omniq("queues", "--json", env=env).stdout)
    assert [entry["queue"] for entry in queues] == ["default", "later"]
    default, later = queues
    assert default["counts"]["failed"] == 1 and default["completed_last_hour"] == 1
    assert len(default["completed_per_minute"]) == 60 and default["oldest_ready_age"] is None
    assert later["counts"]["pending"] == 1 and later["oldest_ready_age"] >= 0
    table = omniq("queues", env=env).stdout.splitlines()
    assert table[0].split()[:3] == ["queue", "pending", "running"] and table[0].split()[-2:] == ["done/hour", "paused"]
    assert [line.split()[0] for line in table[1:]] == ["default", "later"]
    paused = omniq("queues", "pause", "later", env=env)
    assert paused.returncode == 0 and paused.stdout.strip() == "paused later"
    assert omniq("queues", "pause", "empty", env=env).returncode == 0  # a queue without tasks is listed once paused
    shown = {entry["queue"]: entry["paused"] for entry in json.loads(omniq("queues", "--json", env=env).stdout)}
    assert shown == {"default": False, "later": True, "empty": True}
    assert [line.split()[-1] for line in omniq("queues", env=env).stdout.splitlines()[1:]] == ["no", "yes", "yes"]
    assert omniq("queues", "resume", "later", env=env).stdout.strip() == "resumed later"
    assert omniq("queues", "resume", "empty", env=env).returncode == 0
    assert [entry["queue"] for entry in json.loads(omniq("queues", "--json", env=env).stdout)] == ["default", "later"]
    assert omniq("queues", "pause", env=env).returncode == 2
    workers = omniq("workers", "--json", env=env)
    assert workers.returncode == 0 and json.loads(workers.stdout) == []  # none runs now
    assert ("no shared worker registry" in workers.stderr) is (not shared)
    assert omniq("workers", env=env).stdout.split()[:3] == ["id", "host", "pid"]


def test_inspect_shows_timeout_unique_key_and_dependencies(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with _app(tmp_path) as app:
        parent = app.enqueue("alpha", 1)
        child = app.enqueue("alpha", 2, timeout=30, unique_key="child-2", depends_on=parent)
    details = json.loads(omniq("inspect", child, "--json", env=env).stdout)
    assert (details["timeout"], details["unique_key"], details["depends_on"]) == (30.0, "child-2", [parent])
    assert details["arguments"] == {"args": [2], "kwargs": {}} and details["headers"] is None
    text = omniq("inspect", child, env=env).stdout
    assert "unique_key   child-2" in text and "timeout      30.0" in text and parent in text
