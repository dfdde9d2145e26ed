"""Worker processes started, stopped and killed: at-least-once delivery holds and no task is lost or run twice.

A burst worker drains everything once; SIGTERM lets a running task finish, or
releases it (no attempt burnt) past the grace period; a second SIGINT hands a
task back once; a SIGKILLed worker's tasks run again elsewhere, once each,
after their leases expire; two producers and two workers share one store; a
killed process-pool worker leaves no orphan children.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from omniq.models import EventType, TaskStatus
from omniq.testing.faults.cluster import Cluster, FaultTests, wait_for

__all__ = ["WorkerFaultTests"]

#: a second producer: ``python -c PRODUCER <first n>`` enqueues 150 ``record`` tasks from its own process.
PRODUCER = (
    "import sys\n"
    "from omniq.testing.faults.app import app\n"
    "with app:\n"
    "    base = int(sys.argv[1])\n"
    "    for n in range(base, base + 150):\n"
    "        app.enqueue('record', n)\n"
)


class WorkerFaultTests(FaultTests):
    """Real ``omniq worker`` processes on the backend: stop them, kill them, run several."""

    def test_cli_burst_drains_every_task_once(self, cluster: Cluster) -> None:
        with cluster.producer() as app:
            ids = app.enqueue_many("record", [(n,) for n in range(60)])
            worker = cluster.worker("--burst", "--concurrency", "8")
            output, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0, output
            assert "60 task(s) processed" in output
            assert all(app.get_result(i).status is TaskStatus.SUCCEEDED for i in ids)  # type: ignore[union-attr]
        assert cluster.completions() == dict.fromkeys(range(60), 1)

    def test_sigterm_lets_the_running_task_finish(self, cluster: Cluster) -> None:
        with cluster.producer() as app:
            task_id = app.enqueue("held_once", 1, 1.0)
            worker = cluster.worker()
            # The task's own marker, not its RUNNING status: a stop that comes between the claim's write and
            # the task's start hands the task back unstarted (it failed so once in CI, the result missing).
            wait_for(Path(f"{cluster.log}.held-1").exists, 30, "the task to start")
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=30)
            assert worker.returncode == 0, output
            assert "stopping gracefully" in output
            assert app.get_result(task_id).status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]
        assert cluster.completions() == {1: 1}

    def test_sigterm_past_the_grace_period_releases_the_task_at_once(self, cluster: Cluster) -> None:
        cluster.env["OMNIQ_SHUTDOWN_GRACE"] = "0.3"
        cluster.env["OMNIQ_LEASE_DURATION"] = "60"  # recovery by lease expiry would take a minute
        cluster.env["OMNIQ_HEARTBEAT_INTERVAL"] = "5"
        with cluster.producer() as app:
            task_id = app.enqueue("slow", 7, 30.0)
            worker = cluster.worker()
            wait_for(lambda: app.get_task(task_id).status is TaskStatus.RUNNING, 30, "the task to start")  # type: ignore[union-attr]
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=30)
            task = app.get_task(task_id)
            assert task is not None and task.status is TaskStatus.PENDING
            assert task.attempts == 0  # released, not failed: no attempt burnt
            assert cluster.completions() == {}

    def test_second_sigint_releases_the_task_once_and_it_runs_once_elsewhere(
        self, cluster: Cluster, tmp_path: Path
    ) -> None:
        # A long idle wait keeps a claim in flight while the task is released: it must not take the task back.
        cluster.env["OMNIQ_POLL_INTERVAL"] = "3"
        cluster.env["OMNIQ_LEASE_DURATION"] = "60"  # recovery by lease expiry would hide a lost release
        cluster.env["OMNIQ_HEARTBEAT_INTERVAL"] = "5"
        log = tmp_path / "first-worker.log"
        with cluster.producer() as app:
            task_id = app.enqueue("held_once", 1, 60.0)
            worker = cluster.worker(log_file=log)
            # The task's own marker, not its RUNNING status: a claim sets that before the worker starts the
            # task (and a claim still in flight when the stop comes is handed back unstarted, with no events).
            started = Path(f"{cluster.log}.held-1")
            wait_for(started.exists, 30, "the task to start")
            worker.send_signal(signal.SIGINT)
            wait_for(lambda: "stopping gracefully" in log.read_text(), 30, "the first signal to be handled")
            worker.send_signal(signal.SIGINT)
            worker.wait(30)
            output = log.read_text()
            assert worker.returncode == 0, output
            assert "stopped after 0 tasks" in output, output  # handed back, not processed

            task = app.get_task(task_id)
            assert task is not None and task.status is TaskStatus.PENDING, output
            assert task.attempts == 0  # released: no attempt burnt
            held = (task.started_at, task.worker_id, task.lease_token, task.lease_expires_at)
            assert held == (None, None, None, None)
            history = [(e.type, e.attempt) for e in app.get_events(task_id) if e.type is not EventType.ENQUEUED]
            assert history == [(EventType.STARTED, 1), (EventType.RELEASED, 1)], output

            second = cluster.worker("--burst")
            second_output, _ = second.communicate(timeout=60)
            assert second.returncode == 0, second_output
            result = app.get_result(task_id)
            assert result is not None and result.status is TaskStatus.SUCCEEDED and result.attempts == 1
        assert cluster.completions() == {1: 1}

    def test_sigkilled_worker_tasks_rerun_on_another_worker_exactly_once(self, cluster: Cluster) -> None:
        with cluster.producer() as app:
            ids = [app.enqueue("slow", n, 2.0) for n in range(4)]
            victim = cluster.worker("--concurrency", "4")
            wait_for(
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

    def test_two_producers_and_two_workers_on_one_store_run_every_task_once(self, cluster: Cluster) -> None:
        workers = [cluster.worker("--concurrency", "4") for _ in range(2)]
        producers = [cluster.python(PRODUCER, str(base)) for base in (0, 1000)]
        for producer in producers:
            assert producer.wait(60) == 0
        expected = dict.fromkeys([*range(150), *range(1000, 1150)], 1)
        wait_for(lambda: len(cluster.completions()) == len(expected), 60, "every task to complete")
        time.sleep(0.5)  # a duplicate run would show up now
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=30)
        assert cluster.completions() == expected

    @pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
    def test_a_killed_process_pool_worker_leaves_no_orphan_children(self, cluster: Cluster) -> None:
        with cluster.producer() as app:
            app.enqueue_many("slow", [(n, 30.0) for n in range(2)])
            worker = cluster.worker("--pool", "process", "--concurrency", "2")
            children = wait_for(lambda: len(_children(worker.pid)) >= 2 and _children(worker.pid), 60, "two children")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            wait_for(lambda: not any(_alive(pid) for pid in children), 30, "the children to exit after their parent")


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
