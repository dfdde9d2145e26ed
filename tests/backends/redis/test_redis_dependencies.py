"""Redis dependencies at the key level: the DEPENDANTS sets and the dn / wt fields, and what stays off them."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from omniq.models import Outcome, OutcomeKind, Task, TaskResult, TaskStatus
from omniq.monitoring import TaskQuery
from omniq.testing import make_task, now_ms
from omniq_redis import RedisTaskQueue, keys

pytestmark = [pytest.mark.servers, pytest.mark.anyio]


def ended(task: Task, kind: OutcomeKind = OutcomeKind.SUCCEEDED, **fields: object) -> Outcome:
    """The outcome a worker sends for a claimed ``task``."""
    return Outcome(task_id=task.id, lease_token=task.lease_token or "", kind=kind, **fields)  # type: ignore[arg-type]


async def claim(queue: RedisTaskQueue, name: str = "default", limit: int = 10) -> list[Task]:
    return await queue.claim_ready([name], limit, lease=60, worker_id="w")


async def claim_ids(queue: RedisTaskQueue, name: str = "default", limit: int = 10) -> list[str]:
    return [task.id for task in await claim(queue, name, limit)]


async def waiting_of(queue: RedisTaskQueue, task_id: str) -> int:
    task = await queue.get(task_id)
    assert task is not None
    return task.waiting


def dependants_key(prefix: str, queue: str, task_id: str) -> str:
    return f"{keys.queue_tag(prefix, queue)}:{keys.DEPENDANTS}:{task_id}"


async def test_a_task_nobody_waits_on_leaves_no_dependency_state(queue, raw, prefix, monkeypatch):
    """No depends_on: the single-task script, no dn / wt field, no DEPENDANTS key, before and after its end."""
    ran: list[str] = []
    run = queue._run

    async def recording_run(name, args, script_keys=()):
        ran.append(name)
        return await run(name, args, script_keys)

    monkeypatch.setattr(queue, "_run", recording_run)
    first = make_task()
    await queue.enqueue(first)  # registers the queue: the general script
    plain = make_task()
    await queue.enqueue(plain)
    assert ran[-1] == "enqueue_one"
    await queue.enqueue(make_task(depends_on=(plain.id,)))
    assert ran[-1] == "enqueue", "a task with dependencies takes the general script, which counts them"
    other = make_task()
    await queue.enqueue_many([other])
    qk = keys.QueueKeys(prefix, "default")
    for task_id in (first.id, other.id):
        assert not {b"dn", b"wt"} & set(await raw.hgetall(qk.task(task_id)))
    claimed = await claim(queue)
    assert await queue.finish([ended(t) for t in claimed]) == [True] * len(claimed)
    assert await claim_ids(queue) != [], "the dependant of plain is ready now"
    assert [key async for key in raw.scan_iter(match=f"*{prefix}*:{keys.DEPENDANTS}:*")] == []


async def test_the_dependants_set_lives_while_its_task_does_not_end(queue, raw, prefix):
    dep = make_task()
    children = [make_task(depends_on=(dep.id,)) for _ in range(3)]
    await queue.enqueue_many([dep, *children])
    qk = keys.QueueKeys(prefix, "default")
    key = dependants_key(prefix, "default", dep.id)
    # "<dependant id>@<its generation>", the generation in the dependant's hash (keys.DEPENDANT_GENERATION)
    generations = {c.id: (await raw.hget(qk.task(c.id), "dg")).decode() for c in children}
    assert {member.decode() for member in await raw.smembers(key)} == {f"{i}@{g}" for i, g in generations.items()}
    assert len(set(generations.values())) == 3
    assert await raw.hget(qk.task(dep.id), "dn") == b"1"
    assert [await raw.hget(qk.task(c.id), "wt") for c in children] == [b"1"] * 3
    [claimed] = await claim(queue)
    assert await queue.finish([ended(claimed, OutcomeKind.RETRY, eta=now_ms(-1))]) == [True]
    assert await raw.exists(key) == 1, "a retry is not an end"
    [claimed] = await claim(queue)
    assert await queue.finish([ended(claimed)]) == [True]
    assert await raw.exists(key) == 0
    assert await raw.hget(qk.task(dep.id), "dn") is None
    assert [await raw.hget(qk.task(c.id), "wt") for c in children] == [b"0"] * 3
    assert sorted(await claim_ids(queue)) == sorted(c.id for c in children)


async def test_repeated_and_own_ids_count_once_and_never(queue):
    dep = make_task()
    await queue.enqueue(dep)
    child = make_task(depends_on=(dep.id, dep.id, dep.id))
    selfish = make_task(id="selfish", depends_on=("selfish",))
    await queue.enqueue_many([child, selfish])
    assert await waiting_of(queue, child.id) == 1
    assert await waiting_of(queue, selfish.id) == 0
    assert await claim_ids(queue) == [dep.id, selfish.id]
    [running] = await queue.get_many([dep.id])
    assert running is not None
    assert await queue.finish([ended(running)]) == [True]
    assert await claim_ids(queue) == [child.id]


async def test_a_dependency_earlier_in_the_batch_in_another_queue_counts(queue):
    """enqueue_many runs a call per queue: a dependency in another queue must be stored first all the same."""
    first = make_task(queue="a")
    dep = make_task(queue="b")
    child = make_task(queue="a", depends_on=(dep.id,))
    later = make_task(queue="b")
    ids = await queue.enqueue_many([first, dep, child, later])
    assert ids == [first.id, dep.id, child.id, later.id]
    assert await waiting_of(queue, child.id) == 1
    assert await claim_ids(queue, "a") == [first.id]
    claimed = await claim(queue, "b")
    assert [t.id for t in claimed] == [dep.id, later.id]
    assert await queue.finish([ended(claimed[0])]) == [True]
    assert await claim_ids(queue, "a") == [child.id]


async def test_a_dependant_in_another_queue_is_woken(queue):
    dep = make_task(queue="b")
    child = make_task(queue="a", depends_on=(dep.id,))
    await queue.enqueue_many([dep, child])
    [claimed] = await claim(queue, "b")
    got: list[Task] = []
    async with RedisTaskQueue(queue.url, prefix=queue.prefix) as other:

        async def wait() -> None:
            got.extend(await other.claim(["a"], 5, lease=60, worker_id="w2", wait=9.0))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.3)
                assert await queue.finish([ended(claimed)]) == [True]
    assert [t.id for t in got] == [child.id]


async def test_a_dependant_becomes_ready_at_its_place(queue, raw, prefix):
    """Priority first, then its eta (a future one puts it in DELAYED) or created_at, as at enqueue."""
    dep = make_task(priority=10)
    early = make_task(created_at=now_ms(-60))
    low = make_task(depends_on=(dep.id,), created_at=now_ms(-120))
    high = make_task(depends_on=(dep.id,), priority=5)
    later = make_task(depends_on=(dep.id,), priority=9, eta=now_ms(3600))
    await queue.enqueue_many([dep, early, low, high, later])
    assert await claim_ids(queue, limit=1) == [dep.id]
    [running] = await queue.get_many([dep.id])
    assert running is not None
    assert await queue.finish([ended(running)]) == [True]
    assert await raw.zscore(keys.QueueKeys(prefix, "default").delayed, later.id) is not None
    assert await claim_ids(queue) == [high.id, low.id, early.id]


async def test_the_fused_results_path_and_every_terminal_kind_end_the_wait(queue, results):
    deps = [make_task() for _ in range(3)]
    release = make_task(max_retries=3)
    child = make_task(depends_on=tuple(d.id for d in (*deps, release)))
    await queue.enqueue_many([*deps, release, child])
    claimed = {t.id: t for t in await claim(queue)}
    assert set(claimed) == {d.id for d in (*deps, release)}
    succeeded = claimed[deps[0].id]
    result = TaskResult(task_id=succeeded.id, status=TaskStatus.SUCCEEDED, payload=b"ok")
    outcomes = [
        ended(succeeded, result=result),
        ended(claimed[deps[1].id], OutcomeKind.FAILED),
        ended(claimed[deps[2].id], OutcomeKind.EXPIRED),
        ended(claimed[release.id], OutcomeKind.RELEASE),
    ]
    assert await queue.finish(outcomes, results=results) == [True] * 4
    stored = await results.get(succeeded.id)
    assert stored is not None and stored.payload == b"ok"
    assert await waiting_of(queue, child.id) == 1, "a release is not an end"
    [again] = await claim(queue)
    assert again.id == release.id
    assert await queue.finish([ended(again, OutcomeKind.RESCHEDULE, eta=now_ms(-1))]) == [True]
    assert await waiting_of(queue, child.id) == 1, "nor a reschedule"
    assert await queue.cancel(release.id)
    assert await claim_ids(queue) == [child.id]


async def test_a_cancelled_dependant_retried_waits_for_what_is_left(queue):
    first, second = make_task(), make_task()
    child = make_task(depends_on=(first.id, second.id))
    await queue.enqueue_many([first, second, child])
    assert await queue.cancel(child.id)
    assert await queue.cancel(first.id)
    retried = await queue.retry(child.id)
    assert retried is not None and retried.status is TaskStatus.PENDING and retried.waiting == 1
    assert await claim_ids(queue) == [second.id]
    [running] = await queue.get_many([second.id])
    assert running is not None
    assert await queue.finish([ended(running)]) == [True]
    assert await claim_ids(queue) == [child.id]
    assert await claim_ids(queue) == []


async def test_a_resume_leaves_a_waiting_task_out_of_ready(queue):
    dep = make_task()
    child = make_task(depends_on=(dep.id,))
    await queue.enqueue_many([dep, child])
    assert await queue.set_paused(child.id, True)
    assert await queue.set_paused(child.id, False)
    assert await claim_ids(queue) == [dep.id], "resumed, but still waiting"
    [running] = await queue.get_many([dep.id])
    assert running is not None
    assert await queue.finish([ended(running)]) == [True]
    assert await claim_ids(queue) == [child.id]


async def test_purge_deletes_the_dependants_sets_and_skips_purged_dependants(queue, raw, prefix):
    dep, other = make_task(), make_task()
    gone = make_task(queue="gone", depends_on=(dep.id, other.id))
    kept = make_task(depends_on=(dep.id,))
    await queue.enqueue_many([dep, other, gone, kept])
    assert await queue.purge(queue="gone") == 1
    assert await claim_ids(queue, limit=1) == [dep.id]
    [running] = await queue.get_many([dep.id])
    assert running is not None
    assert await queue.finish([ended(running)]) == [True], "a dependant purged meanwhile is skipped"
    assert await queue.purge(queue="default") == 3
    assert [key async for key in raw.scan_iter(match=f"*{prefix}*:{keys.DEPENDANTS}:*")] == []
    assert await queue.count() == 0


async def test_a_recovered_task_with_attempts_left_is_not_an_end(queue):
    dep = make_task(max_retries=1)
    child = make_task(depends_on=(dep.id,))
    await queue.enqueue_many([dep, child])
    assert [t.id for t in await queue.claim_ready(["default"], 1, lease=0.05, worker_id="w")] == [dep.id]
    await anyio.sleep(0.1)
    assert [t.status for t in await queue.recover()] == [TaskStatus.PENDING]
    assert await waiting_of(queue, child.id) == 1
    assert await claim_ids(queue) == [dep.id]


async def test_waiting_is_read_back_by_every_read(queue):
    dep = make_task()
    child = make_task(depends_on=(dep.id,), created_at=now_ms() + timedelta(seconds=1))
    await queue.enqueue_many([dep, child])
    [listed] = await queue.list(status=TaskStatus.PENDING, limit=1)
    assert listed.id == child.id and listed.waiting == 1
    [paged] = await queue.list_page(TaskQuery(limit=1))
    assert paged.id == child.id and paged.waiting == 1
    assert [t.waiting for t in await queue.get_many([dep.id, child.id]) if t is not None] == [0, 1]
