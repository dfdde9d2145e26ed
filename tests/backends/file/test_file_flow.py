"""Engine-specific tests of the file backend's flow control: state files, wakes under busy locks, processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from omniq.backends.file import FileTaskQueue, flow, layout, leases
from omniq.backends.file.store import LocalStore
from omniq.flow_control import Limits
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus, decode_task, new_id, utcnow
from omniq.testing import make_task
from omniq.testing.fixtures import now_ms

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "files"


@pytest.fixture
async def queue(root: Path) -> Any:
    async with FileTaskQueue(str(root)) as q:
        yield q


def limited(concurrency: int = 1, key: str = "k", **fields: Any) -> Task:
    return make_task(limits=Limits(key=key, concurrency=concurrency), **fields)


def done(task: Task) -> Outcome:
    assert task.lease_token is not None
    return Outcome(task_id=task.id, lease_token=task.lease_token, kind=OutcomeKind.SUCCEEDED)


def state(root: Path, key: str = "k") -> flow.KeyState:
    return msgspec.msgpack.decode((root / layout.limit_state_file(key)).read_bytes(), type=flow.KeyState)


def held_ids(root: Path, key: str = "k") -> list[str]:
    """The ids of the key's held entries, in the order they are woken."""
    folder = root / layout.limit_held_dir(key)
    return [layout.held_entry_id(name) for name in sorted(p.name for p in folder.iterdir())] if folder.exists() else []


def pending_body(root: Path, task_id: str, queue: str = "default") -> Task:
    [path] = [p for p in (root / layout.queue_dir(queue)).iterdir() if p.name.endswith(f"_{task_id}.task")]
    return decode_task(path.read_bytes())


def same_stripe_id(task_id: str) -> str:
    """A fresh id whose task lock stripe is ``task_id``'s."""
    stripe = layout.task_lock(task_id)
    while True:
        other = new_id()
        if layout.task_lock(other) == stripe:
            return other


async def test_a_held_task_waits_in_its_queue_folder_and_is_listed_under_its_key(queue: Any, root: Path) -> None:
    first, second = limited(), limited()
    await queue.enqueue_many([first, second])
    [holder] = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    body = pending_body(root, second.id)
    assert body.held and body.eta is not None and holder.lease_expires_at is not None
    assert abs((body.eta - holder.lease_expires_at).total_seconds()) < 0.01, "due at the holder's deadline"
    key_state = state(root)
    assert list(key_state.holders) == [first.id]
    assert held_ids(root) == [second.id]
    assert await queue.finish([done(holder)]) == [True]
    assert not pending_body(root, second.id).held
    assert state(root).holders == {} and held_ids(root) == []


async def test_a_finish_that_claims_leases_the_held_task_it_frees_without_waking_it(queue: Any, root: Path) -> None:
    first, second = limited(), limited()
    other = limited(queue="mail")
    await queue.enqueue_many([first, second])
    [holder] = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert await queue.claim_ready(["default"], 10, lease=30, worker_id="w") == []
    accepted, claimed = await queue.finish_and_claim(
        [done(holder)], queues=["default"], limit=5, lease=30, worker_id="w2"
    )
    assert accepted == [True] and [t.id for t in claimed] == [second.id]
    [running] = claimed
    assert running.status is TaskStatus.RUNNING and running.worker_id == "w2" and not running.held
    assert (root / layout.task_file(layout.RUNNING_DIR, second.id)).exists()
    assert list(state(root).holders) == [second.id] and held_ids(root) == []
    # A held task of a queue the finisher does not claim is woken for the others instead.
    await queue.enqueue(other)
    assert await queue.claim_ready(["mail"], 10, lease=30, worker_id="w") == []
    assert held_ids(root) == [other.id]
    accepted, claimed = await queue.finish_and_claim(
        [done(running)], queues=["default"], limit=5, lease=30, worker_id="w2"
    )
    assert accepted == [True] and claimed == []
    assert not pending_body(root, other.id, "mail").held and held_ids(root) == []
    assert [t.id for t in await queue.claim_ready(["mail"], 10, lease=30, worker_id="w")] == [other.id]


async def test_a_claim_parks_a_bounded_part_of_a_full_backlog_and_the_next_claim_goes_on(
    queue: Any, root: Path
) -> None:
    cap = leases.PARKS_PER_CLAIM
    base = now_ms(-10)
    tasks = [limited(created_at=base + timedelta(milliseconds=i)) for i in range(2 * cap + 1)]
    await queue.enqueue_many(tasks)
    [holder] = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert holder.id == tasks[0].id
    assert len(held_ids(root)) == cap, f"it returned its task after parking {cap}, not all {2 * cap}"
    assert await queue.claim_ready(["default"], 10, lease=30, worker_id="w") == []
    assert held_ids(root) == [t.id for t in tasks[1:]], "the next claim parks the next part, in claim order"


async def test_a_task_at_its_reserved_rate_slot_is_claimed_before_the_rest_of_the_backlog_is_parked(
    queue: Any, root: Path
) -> None:
    # 10/s, burst 1: the first claim starts one task and reserves a slot 0.1 s apart for each it parks.
    cap = leases.PARKS_PER_CLAIM
    base = now_ms(-10)
    rated = Limits(key="r", rate=10.0, burst=1)
    tasks = [make_task(limits=rated, created_at=base + timedelta(milliseconds=i)) for i in range(3 * cap)]
    await queue.enqueue_many(tasks)
    assert [t.id for t in await queue.claim_ready(["default"], 10, lease=30, worker_id="w")] == [tasks[0].id]
    reserved = pending_body(root, tasks[1].id)
    assert reserved.rate_reserved and reserved.eta is not None
    await anyio.sleep(max(0.0, (reserved.eta - utcnow()).total_seconds()) + 0.05)
    # Due at its slot, it sorts behind the unparked backlog (created earlier): the claim parks its
    # share of that backlog, then still takes the reserved task (its name says reserved).
    assert [t.id for t in await queue.claim_ready(["default"], 10, lease=30, worker_id="w")] == [tasks[1].id]
    unparked = [t for t in tasks[cap + 1 :] if not pending_body(root, t.id).rate_reserved]
    assert len(unparked) == len(tasks) - 1 - 2 * cap, "the rest of the backlog waits for the next claims"


async def test_a_holder_on_the_held_tasks_lock_stripe_still_wakes_it(queue: Any) -> None:
    first = limited()
    second = limited(id=same_stripe_id(first.id))
    await queue.enqueue_many([first, second])
    [holder] = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert await queue.claim_ready(["default"], 10, lease=30, worker_id="w") == []
    with anyio.fail_after(5):  # waiting on its own lock stripe would hang here
        assert await queue.finish([done(holder)]) == [True]
    assert [t.id for t in await queue.claim_ready(["default"], 10, lease=30, worker_id="w")] == [second.id]


async def test_a_wake_whose_lock_is_busy_is_finished_after_the_locks(queue: Any, root: Path) -> None:
    first, second = limited(), limited()
    await queue.enqueue_many([first, second])
    [holder] = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert await queue.claim_ready(["default"], 10, lease=30, worker_id="w") == []
    accepted: list[bool] = []
    store = LocalStore(str(root))

    async def finish() -> None:
        accepted.extend(await queue.finish([done(holder)]))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with store.lock(layout.task_lock(second.id)):  # another process busy on the held task's stripe
                tg.start_soon(finish)
                await anyio.sleep(0.3)
                assert accepted == [], "the wake waits for the held task's lock, after the holder's"
                assert pending_body(root, second.id).held
    assert accepted == [True]
    assert [t.id for t in await queue.claim_ready(["default"], 10, lease=30, worker_id="w")] == [second.id]


async def test_recovering_or_purging_a_holder_wakes_a_held_task(queue: Any, root: Path) -> None:
    base = now_ms(-10)
    tasks = [limited(max_retries=3, created_at=base + timedelta(milliseconds=i)) for i in range(3)]
    await queue.enqueue_many(tasks)
    [holder] = await queue.claim_ready(["default"], 10, lease=0.2, worker_id="w")
    assert await queue.claim_ready(["default"], 10, lease=30, worker_id="w") == []
    await anyio.sleep(0.3)
    recovered = await queue.recover()
    assert [t.id for t in recovered] == [holder.id]
    [woken] = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert woken.id == tasks[1].id, "the first held task in claim order"
    assert await queue.purge(statuses=[TaskStatus.RUNNING]) == 1
    assert [t.id for t in await queue.claim_ready(["default"], 10, lease=30, worker_id="w")] == [holder.id]


async def test_purging_everything_leaves_no_woken_task_behind(queue: Any, root: Path) -> None:
    await queue.enqueue_many([limited() for _ in range(3)])
    assert len(await queue.claim_ready(["default"], 10, lease=30, worker_id="w")) == 1
    assert await queue.purge() == 3
    assert await queue.count() == 0


async def test_a_root_made_before_flow_control_gains_its_folder(root: Path) -> None:
    async with FileTaskQueue(str(root)) as q:
        await q.enqueue(make_task())
    (root / layout.LIMITS_DIR).rmdir()  # a root as an older OmniQ left it
    async with FileTaskQueue(str(root)) as q:
        await q.enqueue_many([limited(), limited()])
        claimed = await q.claim_ready(["default"], 10, lease=30, worker_id="w")
        assert len(claimed) == 2, "the unlimited task and one limited one"


async def test_the_pause_marker_is_no_task(queue: Any, root: Path) -> None:
    await queue.enqueue_many([make_task(queue="mail"), make_task(queue="mail")])
    await queue.set_queue_paused("mail", True)
    assert (root / layout.queue_dir("mail") / layout.PAUSED_MARKER).exists()
    assert await queue.count(status=TaskStatus.PENDING) == 2
    assert len(await queue.list(queue="mail")) == 2
    [stats] = await queue.queue_stats()
    assert stats.counts["pending"] == 2
    await queue.set_queue_paused("idle", True)  # a queue with no task yet can be paused too
    assert await queue.paused_queues() == ["idle", "mail"]
    assert await queue.purge() == 2
    assert await queue.paused_queues() == ["idle", "mail"], "purging tasks leaves the queues paused"


CLAIMER = textwrap.dedent(
    """
    import json, os, sys, time
    import anyio
    from omniq.backends.file import FileTaskQueue
    from omniq.models import Outcome, OutcomeKind, TaskStatus

    async def main(root, out, start):
        spans = []
        async with FileTaskQueue(root) as queue:
            while time.time() < start:  # line up with the other processes to maximise contention
                await anyio.sleep(0.005)
            while await queue.count(status=TaskStatus.SUCCEEDED) < int(sys.argv[4]):
                tasks = await queue.claim(["default"], 2, lease=30, worker_id=str(os.getpid()), wait=0.2)
                for task in tasks:
                    began = time.time()  # after the claim returned: within the engine's holders
                    await anyio.sleep(0.02)
                    spans.append((began, time.time()))  # before the finish is sent
                    outcome = Outcome(task_id=task.id, lease_token=task.lease_token, kind=OutcomeKind.SUCCEEDED)
                    assert await queue.finish([outcome]) == [True]
        with open(out, "w") as handle:
            json.dump(spans, handle)

    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
    """
)


def _spawn(script: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(script), *args])


@pytest.mark.slow
async def test_processes_never_run_more_than_the_concurrency_limit(tmp_path: Path, root: Path) -> None:
    limit, total = 2, 30
    async with FileTaskQueue(str(root)) as q:
        await q.enqueue_many([limited(limit) for _ in range(total)])
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER)
    start = time.time() + 2.0
    outputs = [tmp_path / f"spans-{i}.json" for i in range(3)]
    procs = [_spawn(script, str(root), str(out), str(start), str(total)) for out in outputs]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    spans = [tuple(span) for out in outputs for span in json.loads(out.read_text())]
    assert len(spans) == total, "every task ran exactly once"
    edges = sorted([(began, 1) for began, _ in spans] + [(ended, -1) for _, ended in spans])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    assert most <= limit, f"{most} tasks of a concurrency limit {limit} ran at once across processes"


async def test_a_version_1_state_file_with_a_held_list_still_reads(queue: Any, root: Path) -> None:
    """Version 1 listed held tasks in the state file; that list is skipped (its tasks come back at their eta)."""
    legacy = {"holders": {"a": time.time() + 3600}, "held": [[[0, "00"], "b", "pending/q-default/x.task"]]}
    LocalStore(str(root)).write(layout.limit_state_file("k"), msgspec.msgpack.encode(legacy))
    task = limited()
    await queue.enqueue(task)
    assert await queue.claim_ready(["default"], 10, lease=30, worker_id="w") == []  # "a" still holds the slot
    assert held_ids(root) == [task.id] and list(state(root).holders) == ["a"]


async def test_a_batch_that_found_no_held_task_sees_one_parked_since_when_it_frees_another_slot(
    queue: Any, root: Path
) -> None:
    # One finish batch lists a key's held tasks once; a task another claimer parked after that
    # listing is still woken by a later slot of the same batch, not left to its eta.
    first, second = limited(2), limited(2)
    await queue.enqueue_many([first, second])
    holders = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert {t.id for t in holders} == {first.id, second.id}
    files, handover = queue._files, flow.HandOver()
    later: list[tuple[str, str]] = []
    assert not flow.release(files, holders[0], layout.task_lock(holders[0].id), later, handover)
    third, fourth = limited(2), limited(2)
    await queue.enqueue(third)
    assert [t.id for t in await queue.claim_ready(["default"], 10, lease=30, worker_id="w")] == [third.id]
    await queue.enqueue(fourth)
    assert await queue.claim_ready(["default"], 10, lease=30, worker_id="w") == []
    assert held_ids(root) == [fourth.id]
    assert flow.release(files, holders[1], layout.task_lock(holders[1].id), later, handover)
    assert later == [] and held_ids(root) == [] and not pending_body(root, fourth.id).held
