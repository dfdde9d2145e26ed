"""The operator's commands against a real worker process, on every multi-process engine (issue 15 item 4).

A task fails in a running ``omniq worker``; ``omniq retry`` makes the same worker run it again, and it
succeeds. ``omniq workers --json`` lists that worker, seen from another process: the engine's registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omniq import TaskStatus
from tests.faults.conftest import Cluster, wait_until

#: fails on its first run only: a marker file beside the app remembers the run.
FLAKY_APP = """\
import os

from omniq import OmniQ

app = OmniQ()


@app.task(name="flaky", max_retries=0)
def flaky(n: int) -> int:
    marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"ran-{n}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError(f"first run of {n} fails")
    return n * 10
"""


def _env(cluster: Cluster, tmp_path: Path) -> dict[str, str]:
    return {**cluster.env, "PYTHONPATH": os.pathsep.join([str(tmp_path), cluster.env.get("PYTHONPATH", "")])}


def _omniq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omniq", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _start_worker(cluster: Cluster, env: dict[str, str], tmp_path: Path) -> subprocess.Popen[str]:
    (tmp_path / "flakyapp.py").write_text(FLAKY_APP)
    with (tmp_path / "worker.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "omniq", "--log-level", "INFO", "worker", "flakyapp:app"],
            env=env,
            cwd=str(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    cluster.workers.append(process)  # killed at the end of the test
    return process


def test_retry_runs_a_failed_task_again_in_a_running_worker(cluster: Cluster, tmp_path: Path) -> None:
    env = _env(cluster, tmp_path)
    worker = _start_worker(cluster, env, tmp_path)
    with cluster.producer() as app:
        task_id = app.enqueue("flaky", 4, max_retries=0)
        failed = app.get_result(task_id, wait=True, timeout=60)
        assert failed is not None and failed.status is TaskStatus.FAILED, (tmp_path / "worker.log").read_text()

        listed = json.loads(_omniq(env, "tasks", "--status", "failed", "--name", "flaky", "--json").stdout)
        assert [item["id"] for item in listed] == [task_id]
        run = _omniq(env, "retry", task_id)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == f"retried {task_id}"

        result = app.get_result(task_id, wait=True, timeout=60)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.result == 40
        assert result.attempts == 1  # a fresh attempt budget

        def history() -> list[str]:  # the worker writes its events in batches: wait for the run's last one
            types = [event.type.value for event in app.get_events(task_id)]
            return types if types[-1:] == ["succeeded"] else []

        types = wait_until(history, 30, f"the second run's events: {(tmp_path / 'worker.log').read_text()}")
        assert types.index("failed") < types.index("requeued") < types.index("succeeded")
        assert worker.poll() is None


def test_workers_lists_the_running_worker_from_another_process(cluster: Cluster, tmp_path: Path) -> None:
    env = _env(cluster, tmp_path)
    with cluster.producer() as app:
        if not app.shared_worker_registry:
            pytest.skip(f"the {cluster.settings.component('task_queue').type} task queue keeps no shared registry")
    worker = _start_worker(cluster, env, tmp_path)

    def listed() -> list[dict[str, object]]:
        run = _omniq(env, "workers", "--json")
        assert run.returncode == 0, run.stderr
        return [entry for entry in json.loads(run.stdout) if entry["pid"] == worker.pid]

    (entry,) = wait_until(listed, 60, "the worker in omniq workers --json")
    assert entry["queues"] == ["default"] and entry["hostname"] and entry["concurrency"] >= 1
    assert entry["started_at"] <= entry["heartbeat_at"]  # ISO times in UTC compare as text
    assert "no shared worker registry" not in _omniq(env, "workers").stderr
