"""The omniq command, in a subprocess as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omniq import OmniQ, OmniQError, Settings
from omniq.cli import load_app
from omniq.errors import redact_url


def omniq(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command with stdin not a terminal (even when pytest runs in one)."""
    return subprocess.run(
        [sys.executable, "-m", "omniq", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def omniq_on_terminal(*args: str, answer: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command with a pseudo-terminal as stdin, on which ``answer`` is typed."""
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "omniq", *args],
            env=env,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(master, answer.encode() + b"\n")  # the terminal holds the line until the command reads it
        stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["OMNIQ_BASE_DIR"] = str(tmp_path / "data")
    return env


def test_backends_lists_each_component_with_distribution_version_and_capabilities() -> None:
    run = omniq("backends")
    assert run.returncode == 0, run.stderr
    header, *lines = run.stdout.splitlines()
    assert header.split() == ["name", "distribution", "version", "component", "capabilities"]
    rows = {(line.split()[0], line.split()[3]): line for line in lines}
    assert rows["memory", "task_queue"].split()[1] == "omniq-core"
    assert rows["sqlite", "event_storage"].split()[1] == "omniq-sqlite"
    # the capabilities column is what the class declares, component by component
    assert "fused_results" in rows["sqlite", "task_queue"]
    assert "fused_results" not in rows["sqlite", "event_storage"]
    assert rows["memory", "event_storage"].split()[-1] == "-"


def test_unknown_backend_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["OMNIQ_TASK_QUEUE_TYPE"] = "nope"
    run = omniq("status", env=env)
    assert run.returncode == 2
    assert "unknown task_queue type 'nope'" in run.stderr and "installed:" in run.stderr
    assert "Traceback" not in run.stderr


def test_status_inspect_and_purge(tmp_path: Path) -> None:
    env = _env(tmp_path)
    settings = Settings(base_dir=tmp_path / "data")
    with OmniQ(settings) as app:
        task_id = app.enqueue("some.task", 1, 2)
    run = omniq("status", env=env)
    assert run.returncode == 0, run.stderr
    assert any(line.split() == ["pending", "1"] for line in run.stdout.splitlines())
    run = omniq("inspect", task_id, env=env)
    assert run.returncode == 0, run.stderr
    assert "some.task" in run.stdout and "pending" in run.stdout
    assert omniq("inspect", "missing", env=env).returncode == 1
    refused = omniq("purge", env=env)
    assert refused.returncode == 2 and "stdin is not a terminal" in refused.stderr  # refuses without --yes
    run = omniq("purge", "--yes", env=env)
    assert run.returncode == 0 and "purged 1 task(s)" in run.stdout


def test_log_level_is_accepted_before_and_after_the_command(tmp_path: Path) -> None:
    env = _env(tmp_path)
    for args in (["--log-level", "WARNING", "status"], ["status", "--log-level", "WARNING"]):
        run = omniq(*args, env=env)
        assert run.returncode == 0, (args, run.stderr)
    run = omniq("queues", "pause", "default", "--log-level", "DEBUG", env=env)  # a command's command too
    assert run.returncode == 0 and "paused default" in run.stdout, run.stderr
    bad = omniq("status", "--log-level", "LOUD", env=env)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_a_closed_pipe_ends_the_output_quietly(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with OmniQ(Settings(base_dir=tmp_path / "data")) as app:
        app.enqueue_many("some.task", [(i,) for i in range(2000)])
    process = subprocess.Popen(
        [sys.executable, "-m", "omniq", "tasks", "--limit", "2000"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()  # the header: then the reader goes away, as `| head -1` does
    process.stdout.close()
    with process.stderr:
        stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nomodule_xyz:app", "No module named"),
        ("os:nothing_here", "no attribute"),
        ("os:sep", "not an OmniQ"),
        ("justaname", "expected 'module:attribute'"),
    ],
)
def test_load_app_errors_are_clear(spec: str, message: str) -> None:
    with pytest.raises(OmniQError, match=message):
        load_app(spec)


def test_load_app_accepts_dotted_paths_and_factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "myapp_for_cli.py").write_text(
        "from omniq import AsyncOmniQ, Settings\n"
        "def make():\n"
        "    return AsyncOmniQ(Settings(backend='memory'))\n"
        "app = make()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_app("myapp_for_cli.app").settings.backend == "memory"
    assert load_app("myapp_for_cli:make").settings.backend == "memory"


FAST_APP = """\
import time

from omniq import OmniQ

app = OmniQ()


@app.task(name="double")
def double(n: int) -> int:
    return 2 * n


@app.task(name="stuck", timeout=0.5, max_retries=0)
def stuck() -> None:
    time.sleep(60)
"""


def test_burst_of_fast_thread_tasks_exits_without_a_lingering_thread_warning(tmp_path: Path) -> None:
    (tmp_path / "fastapp.py").write_text(FAST_APP)
    env = _env(tmp_path)
    for run_number in range(6):
        with OmniQ(Settings(base_dir=tmp_path / "data")) as app:
            app.enqueue_many("double", [(n,) for n in range(40)])
        run = omniq("worker", "fastapp:app", "--burst", "--pool", "thread", "-c", "8", env=env, cwd=tmp_path)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output
        assert "40 task(s) processed" in output, output
        assert "still running" not in output, f"run {run_number}:\n{output}"


def test_a_timed_out_thread_task_is_reported_and_does_not_hold_the_exit(tmp_path: Path) -> None:
    (tmp_path / "fastapp.py").write_text(FAST_APP)
    with OmniQ(Settings(base_dir=tmp_path / "data")) as app:
        app.enqueue("stuck", timeout=0.5, max_retries=0)  # a producer without the function: options explicit
    run = omniq("worker", "fastapp:app", "--burst", "--pool", "thread", env=_env(tmp_path), cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "exiting with 1 task thread(s) still running" in output, output


def test_version_names_core_and_every_installed_backend_distribution() -> None:
    from importlib.metadata import version

    run = omniq("--version")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"omniq-core {version('omniq-core')}"
    assert f"omniq-sqlite {version('omniq-sqlite')}" in lines


def test_status_names_the_backend_and_the_file_it_reads(tmp_path: Path) -> None:
    run = omniq("status", env=_env(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == f"backend: sqlite at {tmp_path / 'data' / 'omniq.db'}"


@pytest.mark.servers
def test_status_names_a_server_by_its_redacted_url(redis_url: str, tmp_path: Path) -> None:
    scheme, _, rest = redis_url.partition("://")
    url = redis_url if "@" in rest else f"{scheme}://default:s3cr3t-pw@{rest}"  # a password to hide
    env = _env(tmp_path) | {"OMNIQ_BACKEND": "redis", "OMNIQ_URL": url, "OMNIQ_KEY_PREFIX": "omniq_status_test"}
    run = omniq("status", env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == f"backend: redis at {redact_url(url)} (prefix omniq_status_test)"
    assert "s3cr3t-pw" not in run.stdout + run.stderr


def test_purge_on_a_terminal_asks_first(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with OmniQ(Settings(base_dir=tmp_path / "data")) as app:
        app.enqueue_many("some.task", [(1,), (2,)])
    declined = omniq_on_terminal("purge", answer="n", env=env)
    assert declined.returncode == 1, declined.stderr
    assert f"delete 2 task(s), with all results and events from backend: sqlite at {tmp_path}" in declined.stdout
    assert "nothing purged" in declined.stdout
    with OmniQ(Settings(base_dir=tmp_path / "data")) as app:
        assert app.count_tasks() == 2
    accepted = omniq_on_terminal("purge", "--status", "pending", answer="y", env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert "delete 2 task(s) (status pending)" in accepted.stdout and "purged 2 task(s)" in accepted.stdout
