"""Flow control through real worker processes on every multi-process engine.

Limits hold across worker processes (each task logs its own start and end, a
sub-interval of the time the engine counts it as running, so the overlap of
the logged spans can exceed the limit only if the engine's does), and a
worker killed with SIGKILL while it holds a concurrency slot does not leak it:
the slot comes back when its lease expires.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from omniq import TaskStatus, plugins
from omniq.base import Capability

from .conftest import Cluster, wait_until

pytestmark = pytest.mark.slow


def _require_flow_control(cluster: Cluster) -> None:
    queue_class = plugins.resolve_backend("task_queue", cluster.env["OMNIQ_BACKEND"])
    if Capability.FLOW_CONTROL not in queue_class.capabilities:
        pytest.skip(f"{queue_class.__name__} does not declare {Capability.FLOW_CONTROL!r}")


def _spans(cluster: Cluster) -> list[tuple[str, int, float, int]]:
    path = Path(f"{cluster.log}.spans")
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(kind, int(n), float(at), int(pid)) for kind, n, at, pid in rows]


def _most_at_once(spans: list[tuple[str, int, float, int]]) -> int:
    events = sorted((at, 0 if kind == "end" else 1) for kind, _, at, _ in spans)  # an end before a start at a tie
    running = most = 0
    for _, delta in events:
        running += 1 if delta else -1
        most = max(most, running)
    return most


def test_a_concurrency_limit_holds_across_worker_processes(cluster: Cluster) -> None:
    _require_flow_control(cluster)
    with cluster.producer() as app:
        # The producer enqueues by name (the functions live in faultapp), so it gives the limit itself.
        ids = app.enqueue_many("limited", [(n, 0.15) for n in range(16)], concurrency_limit=2)
        free = app.enqueue_many("record", [(100 + n,) for n in range(8)])
        for _ in range(2):
            cluster.worker("--concurrency", "6")
        for task_id in ids + free:
            result = app.get_result(task_id, wait=True, timeout=90)
            assert result is not None and result.status is TaskStatus.SUCCEEDED
    spans = _spans(cluster)
    assert len([s for s in spans if s[0] == "start"]) == 16
    assert _most_at_once(spans) <= 2, "more than concurrency_limit=2 ran at once"
    assert cluster.completions() == {**dict.fromkeys(range(16), 1), **dict.fromkeys(range(100, 108), 1)}


def test_a_killed_slot_holder_frees_its_slot_when_its_lease_expires(cluster: Cluster) -> None:
    _require_flow_control(cluster)
    with cluster.producer() as app:
        holder = app.enqueue("single", 1, 60.0, concurrency_limit=1)
        victim = cluster.worker("--concurrency", "4")
        wait_until(lambda: app.get_task(holder).status is TaskStatus.RUNNING, 30, "the holder to start")  # type: ignore[union-attr]
        waiting = app.enqueue("single", 2, 0.0, concurrency_limit=1)
        time.sleep(0.5)
        assert app.get_task(waiting).status is TaskStatus.PENDING  # type: ignore[union-attr]
        victim.kill()
        victim.wait(10)
        cluster.worker("--concurrency", "4")
        # The slot comes back after the holder's lease (1.5 s here), though the dead worker never gave
        # it back: the waiting task runs (the holder's rerun, which does not sleep, may run first).
        result = app.get_result(waiting, wait=True, timeout=60)
        assert result is not None and result.status is TaskStatus.SUCCEEDED
    assert cluster.completions()[2] == 1


def test_a_burst_worker_drains_tasks_held_by_a_concurrency_limit(cluster: Cluster) -> None:
    """Each finish makes a held task ready: the burst worker must not stop before it claims it."""
    _require_flow_control(cluster)
    with cluster.producer() as app:
        app.enqueue_many("record", [(n,) for n in range(120)], concurrency_limit=5)
        worker = cluster.worker("--burst", "--concurrency", "20")
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, output
    assert cluster.completions() == dict.fromkeys(range(120), 1)


def test_a_killed_worker_frees_the_slot_its_finish_passed_on(cluster: Cluster) -> None:
    """A task started in the slot a finish freed (handed over, where the engine does) holds it as a claimed one."""
    _require_flow_control(cluster)
    with cluster.producer() as app:
        first = app.enqueue("single", 1, 0.5, concurrency_limit=1)  # held long enough for the others to be parked
        second = app.enqueue("single", 2, 60.0, concurrency_limit=1)
        third = app.enqueue("single", 3, 0.0, concurrency_limit=1)
        victim = cluster.worker("--concurrency", "4")
        wait_until(lambda: app.get_task(second).status is TaskStatus.RUNNING, 30, "the second to start")  # type: ignore[union-attr]
        assert app.get_task(first).status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]
        assert app.get_task(third).status is TaskStatus.PENDING  # type: ignore[union-attr]
        victim.kill()
        victim.wait(10)
        cluster.worker("--concurrency", "4")
        for task_id in (second, third):  # the second's rerun does not sleep
            result = app.get_result(task_id, wait=True, timeout=60)
            assert result is not None and result.status is TaskStatus.SUCCEEDED
    assert cluster.completions() == {1: 1, 2: 1, 3: 1}
