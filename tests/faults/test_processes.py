"""``omniq worker APP --processes N``: a supervisor of N real worker processes.

Supervision does not depend on the engine, so these run on SQLite (a file
several processes share); the drain figures on servers are in benchmarks/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.conftest import FAULT_TIMINGS, HERE, Cluster, wait_until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of someone else still answers kill(0); its state says it is gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _child_pids(log: Path) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker process \d+ started \(pid (\d+)\)", log.read_text())]


@pytest.fixture
def sqlite_cluster(tmp_path: Path) -> Cluster:
    return Cluster({"OMNIQ_BACKEND": "sqlite", "OMNIQ_BASE_DIR": str(tmp_path / "data")}, tmp_path)


def _kill_everything(supervisor: subprocess.Popen[str], log: Path) -> None:
    for pid in _child_pids(log):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if supervisor.poll() is None:
        supervisor.kill()
    supervisor.wait(10)


def test_two_processes_share_the_work_restart_a_killed_child_and_stop_on_sigterm(
    sqlite_cluster: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "supervisor.log"
    with sqlite_cluster.producer() as producer:
        for n in range(40):
            producer.enqueue("slow", n, 0.2)
    supervisor = sqlite_cluster.worker("--processes", "2", "--concurrency", "1", log_file=log)
    try:
        first, second = wait_until(
            lambda: _child_pids(log)[:2] if len(_child_pids(log)) >= 2 else None, 60, "2 children"
        )
        # both children take tasks (each runs one at a time, 0.2 s each)
        wait_until(lambda: {first, second} <= _completed_pids(sqlite_cluster), 60, "tasks from both children")

        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(_child_pids(log)) >= 3, 30, "the killed child's replacement")
        replacement = _child_pids(log)[2]
        assert f"worker process 1 (pid {first}) was killed by signal 9" in log.read_text()
        wait_until(lambda: replacement in _completed_pids(sqlite_cluster), 60, "tasks from the replacement")

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0, log.read_text()
        assert not _alive(second) and not _alive(replacement)
        assert "stopping 2 worker process(es) (SIGTERM)" in log.read_text()
    finally:
        _kill_everything(supervisor, log)


def _completed_pids(cluster: Cluster) -> set[int]:
    return {int(line.split()[1]) for line in cluster.log.read_text().splitlines() if line.strip()}


def test_burst_with_processes_drains_and_exits(sqlite_cluster: Cluster, tmp_path: Path) -> None:
    with sqlite_cluster.producer() as producer:
        for n in range(30):
            producer.enqueue("record", n)
    supervisor = sqlite_cluster.worker("--processes", "2", "--burst")
    out, _ = supervisor.communicate(timeout=120)
    assert supervisor.returncode == 0, out
    assert sorted(sqlite_cluster.completions()) == list(range(30))
    assert out.count("finished its burst") == 2


def test_children_that_keep_crashing_end_the_supervisor_with_an_error(tmp_path: Path) -> None:
    (tmp_path / "crashapp.py").write_text(
        "import os\n"
        "from omniq import OmniQ\n"
        "if os.environ.get('OMNIQ_WORKER_PROCESS'):\n"
        "    raise SystemExit(3)  # every child dies at start: a broken deployment\n"
        "app = OmniQ()\n"
    )
    env = {**os.environ, **FAULT_TIMINGS, "OMNIQ_BACKEND": "sqlite", "OMNIQ_BASE_DIR": str(tmp_path / "data")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-m", "omniq", "worker", "crashapp:app", "--processes", "2"],
        env=env,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert "worker processes keep crashing" in run.stderr
    assert "exited with code 3" in run.stderr


def test_a_killed_supervisor_does_not_leave_children_running(sqlite_cluster: Cluster, tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    supervisor = sqlite_cluster.worker("--processes", "2", log_file=log)
    try:
        children = wait_until(lambda: _child_pids(log)[:2] if len(_child_pids(log)) >= 2 else None, 60, "2 children")
        wait_until(lambda: log.read_text().count(" started: queues=") >= 2, 60, "both workers running")
        supervisor.kill()
        supervisor.wait(10)
        # each orphan notices within a second and stops gracefully
        wait_until(lambda: not any(_alive(pid) for pid in children), 30, "the orphaned children to stop")
    finally:
        _kill_everything(supervisor, log)


@pytest.mark.parametrize("value", ["0", "-1", "many", "1025"])
def test_a_bad_processes_value_is_a_clear_error(value: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env |= {"OMNIQ_BASE_DIR": str(tmp_path), "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-m", "omniq", "worker", "faultapp:app", "--processes", value],
        env=env,
        cwd=str(HERE),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--processes must be a whole number from 1 to 1024 or 'auto'" in run.stderr
    assert "Traceback" not in run.stderr


def test_auto_is_the_cpus_available() -> None:
    from omniq.worker.supervisor import resolve_processes

    assert resolve_processes("auto") == len(os.sched_getaffinity(0))
    assert resolve_processes("3") == 3
