"""omniq.contrib.django: Django's own task API end to end, on OmniQ, with a real ``omniq worker``.

The producer is this process, set up once for the module as the example
project (examples/django_app, its settings module named by
``DJANGO_SETTINGS_MODULE``); the worker is ``omniq worker
omniq.contrib.django:worker_app`` in a process of its own. Both use a SQLite
store in the module's temporary directory (``OMNIQ_BASE_DIR``). The
environment is restored after the module; Django stays set up, which no
other test module relies on either way.

The API is Django's own ``django.tasks`` on Django 6 (Python 3.12+), the
django-tasks backport on Django 5.2 (3.10, 3.11): the root's ``test`` extra
installs whichever the Python takes, and the same tests run on both.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ, Settings

pytest.importorskip("django", exc_type=ImportError)
contrib = pytest.importorskip("omniq.contrib.django", exc_type=ImportError)  # Django's task API: 6.0+ or the backport
dj: Any = importlib.import_module("omniq.contrib.django._compat")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MODULE = "examples.django_app.settings"
#: generous: a worker process on a loaded CI box
TIMEOUT = 60.0


def outside() -> None:
    """A function of a module outside the installed apps (this one)."""


class Project:
    """The example project as this module runs it: its tasks, its store and its worker's log."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data = data
        self.log = log
        self.tasks: Any = importlib.import_module("examples.django_app.tasks")
        self.api: Any = importlib.import_module(dj.ROOT)  # django.tasks, or the backport's django_tasks
        self.backend: Any = self.api.default_task_backend

    def omniq(self) -> OmniQ:
        """An OmniQ app of its own on the same store: how OmniQ itself sees the tasks."""
        return OmniQ(Settings(backend="sqlite", base_dir=self.data))

    def wait(self, result: Any) -> Any:
        """``result`` refreshed until it is finished (Django's ``refresh()``, polled)."""
        deadline = time.monotonic() + TIMEOUT
        while not result.is_finished:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{result.task.name} {result.id} still {result.status} after {TIMEOUT} s:\n{self.log.read_text()}"
                )
            time.sleep(0.1)
            result.refresh()
        return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("django")
    env = {
        "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
        "OMNIQ_BASE_DIR": str(base / "data"),
        "OMNIQ_POLL_INTERVAL": "0.2",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.syspath_prepend(str(ROOT))
        importlib.import_module("django").setup()
        log = base / "worker.log"
        with log.open("w") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "omniq", "worker", "omniq.contrib.django:worker_app"],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                cwd=str(base),  # the project is found through PYTHONPATH, as a deployment would
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        try:
            yield Project(base / "data", log)
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            dj.task_backends.close_all()  # closes the backend's OmniQ app


def test_the_task_api_is_djangos_own_from_django_6() -> None:
    django: Any = importlib.import_module("django")
    expected = "django.tasks" if django.VERSION >= (6,) else "django_tasks"
    assert dj.ROOT == expected
    base = importlib.import_module(f"{expected}.backends.base").BaseTaskBackend
    assert issubclass(contrib.OmniQBackend, base)
    assert dj.Task is importlib.import_module(f"{expected}.base").Task


def test_a_sync_task_runs_in_the_worker(project: Project) -> None:
    result = project.tasks.add.enqueue(2, 3)
    assert result.status == dj.TaskResultStatus.READY
    assert result.args == [2, 3]
    assert result.backend == "default"
    project.wait(result)
    assert result.status == dj.TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1
    assert result.worker_ids[0]
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.errors == []
    assert isinstance(result.task, dj.Task)


def test_the_worker_sends_djangos_task_signals(project: Project) -> None:
    result = project.wait(project.tasks.add.enqueue(4, 4))
    log = project.log.read_text()  # Django's receivers log them (the example's LOGGING)
    for state in ("RUNNING", "SUCCESSFUL"):
        assert f"Task id={result.id} path=examples.django_app.tasks.add state={state}" in log


@pytest.mark.anyio
async def test_an_async_task_through_the_async_api(project: Project) -> None:
    result = await project.tasks.slow_hello.aenqueue("ada", seconds=0.2)
    deadline = time.monotonic() + TIMEOUT
    while not result.is_finished and time.monotonic() < deadline:
        await dj.sync_to_async(time.sleep)(0.1)
        await result.arefresh()
    assert result.status == dj.TaskResultStatus.SUCCESSFUL
    assert result.return_value == "hello ada"
    again = await project.api.default_task_backend.aget_result(result.id)
    assert (again.status, again.return_value, again.kwargs) == (result.status, "hello ada", {"seconds": 0.2})


def test_a_failing_task_is_failed_with_its_error(project: Project) -> None:
    result = project.wait(project.tasks.charge.enqueue(5))
    assert result.status == dj.TaskResultStatus.FAILED
    assert result.attempts == 2  # the example's settings: one retry
    (error,) = result.errors
    assert error.exception_class is project.tasks.PaymentDeclined
    assert error.exception_class_path == "examples.django_app.tasks.PaymentDeclined"
    assert "card declined for 5" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value
    # task_finished once, after the last attempt (OmniQ retried the first)
    assert project.log.read_text().count(f"Task id={result.id} path=examples.django_app.tasks.charge state=FAILED") == 1


def test_run_after_defers_the_task(project: Project) -> None:
    run_after = datetime.now(timezone.utc) + timedelta(seconds=4)
    result = project.tasks.add.using(run_after=run_after).enqueue(1, 2)
    time.sleep(1.5)  # the worker polls every 0.2 s: it would have run it by now
    result.refresh()
    assert result.status == dj.TaskResultStatus.READY
    assert result.task.run_after == run_after
    project.wait(result)
    assert result.return_value == 3
    assert result.started_at >= run_after


def test_priority_and_queue_reach_omniq(project: Project) -> None:
    chosen = project.tasks.add.using(priority=-20, queue_name="emails").enqueue(1, 1)
    declared = project.tasks.send_welcome.enqueue(7, greeting="Hi")  # @task(queue_name="emails", priority=10)
    with project.omniq() as omniq:
        first, second = omniq.get_task(chosen.id), omniq.get_task(declared.id)
    assert first is not None and second is not None
    assert (first.func, first.queue, first.priority) == ("examples.django_app.tasks.add", "emails", -20)
    assert (second.func, second.queue, second.priority) == ("examples.django_app.tasks.send_welcome", "emails", 10)
    assert project.wait(declared).return_value == {"to": 7, "text": "Hi, user 7!"}  # the worker consumes QUEUES
    assert project.wait(chosen).task.priority == -20


def test_get_result_reads_omniq_and_knows_what_is_not_there(project: Project) -> None:
    result = project.wait(project.tasks.add.enqueue(20, 22))
    read = project.api.default_task_backend.get_result(result.id)
    assert (read.id, read.status, read.return_value, read.args) == (result.id, result.status, 42, [20, 22])
    assert project.tasks.add.get_result(result.id).return_value == 42
    with pytest.raises(dj.TaskResultMismatch):  # Django's Task.get_result: the id is another task's
        project.tasks.send_welcome.get_result(result.id)
    with pytest.raises(dj.TaskResultDoesNotExist):
        project.api.default_task_backend.get_result("0" * 32)
    with project.omniq() as omniq:
        native = omniq.enqueue("not.a.django.task", queue="elsewhere")
    with pytest.raises(dj.TaskResultDoesNotExist):  # an OmniQ task, but no Django task
        project.backend.get_result(native)


def test_a_task_can_take_its_context(project: Project) -> None:
    result = project.wait(project.tasks.attempt.enqueue())
    assert result.return_value == {"attempt": 1, "id": result.id}


def test_the_example_views_enqueue_and_read(project: Project) -> None:
    client = importlib.import_module("django.test").Client()  # Django ships no types: imported as Any
    created = client.get("/add", {"a": 2, "b": 40}).json()
    assert created["status"] == "READY"
    deadline = time.monotonic() + TIMEOUT
    while (shown := client.get(created["result"]).json())["status"] != "SUCCESSFUL" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shown == {"id": created["id"], "status": "SUCCESSFUL", "return_value": 42}


def test_enqueue_refuses_what_a_worker_could_not_run(project: Project) -> None:
    with pytest.raises(dj.InvalidTask, match="Queue 'nope' is not valid"):
        project.tasks.add.using(queue_name="nope")
    with pytest.raises(TypeError):  # arguments are JSON data, as Django requires
        project.tasks.add.enqueue(datetime.now(timezone.utc), 1)
    with pytest.raises(dj.InvalidTask, match="outside the installed apps"):
        project.api.task(outside).enqueue()


def test_the_backend_checks_its_options(project: Project) -> None:
    assert list(project.backend.check()) == []
    bad = contrib.OmniQBackend("bad", {"OPTIONS": {"SETTINGS": {"max_workers": 0}}})
    (error,) = bad.check()
    assert error.id == "omniq.E001"
    assert "max_workers" in error.msg
    with pytest.raises(dj.ImproperlyConfigured, match="unknown key"):
        contrib.OmniQBackend("typo", {"OPTIONS": {"SETTNGS": {}}})


def test_the_worker_needs_the_django_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE" and not k.startswith("OMNIQ_")}
    run = subprocess.run(
        [sys.executable, "-m", "omniq", "worker", "omniq.contrib.django:worker_app", "--burst"],
        env={**env, "OMNIQ_BASE_DIR": str(tmp_path)},
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert run.returncode != 0
    assert "DJANGO_SETTINGS_MODULE" in run.stdout + run.stderr


def test_without_django_the_import_names_the_extra() -> None:
    code = "import sys; sys.modules['django'] = None; import omniq.contrib.django"  # None: as if not installed
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode != 0
    assert "ImportError: omniq.contrib.django needs Django's task API" in run.stderr
    assert "omniq-core[django]" in run.stderr
