"""Real worker processes: burst drain, graceful SIGTERM, SIGKILL recovery, self-killing tasks, corruption."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omniq import TaskStatus

from .conftest import HERE, Cluster, wait_until

pytestmark = pytest.mark.slow


def test_cli_burst_drains_every_task_once(cluster: Cluster) -> None:
    with cluster.producer() as app:
        ids = app.enqueue_many("record", [(n,) for n in range(60)])
        worker = cluster.worker("--burst", "--concurrency", "8")
        output, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, output
        assert "60 task(s) processed" in output
        assert all(app.get_result(i).status is TaskStatus.SUCCEEDED for i in ids)  # type: ignore[union-attr]
    assert cluster.completions() == dict.fromkeys(range(60), 1)


def test_sigterm_lets_the_running_task_finish(cluster: Cluster) -> None:
    with cluster.producer() as app:
        task_id = app.enqueue("slow", 1, 1.0)
        worker = cluster.worker()
        wait_until(lambda: app.get_task(task_id).status is TaskStatus.RUNNING, 30, "the task to start")  # type: ignore[union-attr]
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, output
        assert "stopping gracefully" in output
        assert app.get_result(task_id).status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]
    assert cluster.completions() == {1: 1}


def test_sigterm_past_the_grace_period_releases_the_task_at_once(cluster: Cluster) -> None:
    cluster.env["OMNIQ_SHUTDOWN_GRACE"] = "0.3"
    cluster.env["OMNIQ_LEASE_DURATION"] = "60"  # recovery by lease expiry would take a minute
    cluster.env["OMNIQ_HEARTBEAT_INTERVAL"] = "5"
    with cluster.producer() as app:
        task_id = app.enqueue("slow", 7, 30.0)
        worker = cluster.worker()
        wait_until(lambda: app.get_task(task_id).status is TaskStatus.RUNNING, 30, "the task to start")  # type: ignore[union-attr]
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
        task = app.get_task(task_id)
        assert task is not None and task.status is TaskStatus.PENDING
        assert task.attempts == 0  # released, not failed: no attempt burnt
        assert cluster.completions() == {}


def test_sigkilled_worker_tasks_rerun_on_another_worker_exactly_once(cluster: Cluster) -> None:
    with cluster.producer() as app:
        ids = [app.enqueue("slow", n, 2.0) for n in range(4)]
        victim = cluster.worker("--concurrency", "4")
        wait_until(
            lambda: all(app.get_task(i).status is TaskStatus.RUNNING for i in ids),  # type: ignore[union-attr]
            30,
            "all tasks to start on the first worker",
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        cluster.worker("--concurrency", "4")
        # lease (1.5 s) + sweep (0.3 s) + 1 s promised; generous bound for a loaded machine
        for task_id in ids:
            result = app.get_result(task_id, wait=True, timeout=60)
            assert result is not None and result.status is TaskStatus.SUCCEEDED
            assert result.attempts == 2
        assert time.monotonic() - killed_at < 60
    assert cluster.completions() == dict.fromkeys(range(4), 1)


def test_task_that_kills_its_process_ends_failed_instead_of_looping(cluster: Cluster) -> None:
    with cluster.producer() as app:
        task_id = app.enqueue("suicide", max_retries=1)  # at most two attempts
        done = app.enqueue("record", 99)
        for _ in range(6):
            worker = cluster.worker()
            try:
                worker.wait(timeout=8)  # it dies when it runs the task
            except subprocess.TimeoutExpired:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
            task = app.get_task(task_id)
            assert task is not None
            if task.status is TaskStatus.FAILED:
                break
        assert task is not None and task.status is TaskStatus.FAILED
        assert task.attempts == 2
        assert task.error is not None and task.error.type == "LeaseExpired"
        result = app.get_result(task_id)
        assert result is not None and result.status is TaskStatus.FAILED
        assert app.get_result(done, wait=True, timeout=30).status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]


def test_corrupted_payload_fails_once_and_the_worker_carries_on(cluster: Cluster) -> None:
    with cluster.producer() as app:
        from omniq.models import Task, new_id

        bad = Task(id=new_id(), func="record", payload=b"\x07msgpack\xc1not-msgpack", max_retries=3)
        app._call(app.async_app.task_queue.enqueue, bad)
        good = app.enqueue("record", 5)
        worker = cluster.worker("--burst")
        output, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, output
        result = app.get_result(bad.id)
        assert result is not None and result.status is TaskStatus.FAILED and result.attempts == 1
        assert result.error is not None and result.error.type == "SerializationError"
        assert app.get_result(good).status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]


def test_two_producers_and_two_workers_on_one_store_run_every_task_once(cluster: Cluster) -> None:
    script = (
        "import sys\n"
        "from faultapp import app\n"
        "with app:\n"
        "    base = int(sys.argv[1])\n"
        "    for n in range(base, base + 150):\n"
        "        app.enqueue('record', n)\n"
    )
    workers = [cluster.worker("--concurrency", "4") for _ in range(2)]
    producers = [
        subprocess.Popen([sys.executable, "-c", script, str(base)], env=cluster.env, cwd=str(HERE))
        for base in (0, 1000)
    ]
    for producer in producers:
        assert producer.wait(60) == 0
    expected = dict.fromkeys([*range(150), *range(1000, 1150)], 1)
    wait_until(lambda: len(cluster.completions()) == len(expected), 60, "every task to complete")
    time.sleep(0.5)  # a duplicate run would show up now
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert cluster.completions() == expected


def _children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_killed_process_pool_worker_leaves_no_orphan_children(cluster: Cluster) -> None:
    with cluster.producer() as app:
        app.enqueue_many("slow", [(n, 30.0) for n in range(2)])
        worker = cluster.worker("--pool", "process", "--concurrency", "2")
        children = wait_until(lambda: len(_children(worker.pid)) >= 2 and _children(worker.pid), 60, "two children")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        wait_until(lambda: not any(_alive(pid) for pid in children), 30, "the children to exit after their parent")
