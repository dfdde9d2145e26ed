"""Engine-specific tests of the file backend's dependencies: where waiting tasks live, what plain tasks pay, crash repair."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq.backends.file import FileTaskQueue, dependencies, layout
from omniq.backends.file.dependencies import Counting, decode_ids, encode_ids
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus, decode_task, new_id
from omniq.testing import make_task

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "files"


@pytest.fixture
async def queue(root: Path) -> Any:
    async with FileTaskQueue(str(root)) as q:
        yield q


def ended(task: Task, kind: OutcomeKind = OutcomeKind.SUCCEEDED) -> Outcome:
    assert task.lease_token is not None
    eta = task.created_at if kind is OutcomeKind.RETRY else None
    return Outcome(task_id=task.id, lease_token=task.lease_token, kind=kind, eta=eta)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


async def claim_ids(queue: Any, limit: int = 50) -> list[str]:
    return [t.id for t in await queue.claim_ready(["default"], limit, lease=30, worker_id="w")]


async def finish_all(queue: Any) -> list[str]:
    claimed = await queue.claim_ready(["default"], 50, lease=30, worker_id="w")
    assert all(await queue.finish([ended(t) for t in claimed]))
    return [t.id for t in claimed]


def same_stripe_id(task_id: str) -> str:
    """A fresh id whose task lock stripe is ``task_id``'s."""
    stripe = layout.task_lock(task_id)
    while True:
        other = new_id()
        if layout.task_lock(other) == stripe:
            return other


# -- where things live ----------------------------------------------------------------------------------


async def test_a_dependant_waits_in_its_folder_and_its_dependency_holds_the_edge(queue: Any, root: Path) -> None:
    dep = make_task()
    child = make_task(depends_on=(dep.id,))
    await queue.enqueue(dep)
    await queue.enqueue(child)  # a separate batch: the dependency is found by looking, not remembered
    assert names(root / layout.WAITING_DIR) == [f"{child.id}.task"]
    assert decode_task((root / layout.task_file(layout.WAITING_DIR, child.id)).read_bytes()).waiting == 1
    assert decode_ids((root / layout.dependants_file(dep.id)).read_bytes()) == [child.id]
    assert [p.name.endswith(f"_{dep.id}.task") for p in (root / layout.queue_dir("default")).iterdir()] == [True]

    assert await finish_all(queue) == [dep.id]
    assert names(root / layout.WAITING_DIR) == []
    assert names(root / layout.DEPENDANTS_DIR) == [], "the record was taken by the end"
    assert names(root / layout.JOURNAL_DIR) == [], "and its journal deleted once the count was lowered"
    [pending] = (root / layout.queue_dir("default")).iterdir()
    assert pending.name.endswith(f"_{child.id}.task")
    assert decode_task(pending.read_bytes()).waiting == 0
    assert await claim_ids(queue) == [child.id]


async def test_a_fan_out_in_one_batch_is_one_append_and_waiting_tasks_are_pending_but_not_ready(
    queue: Any, root: Path
) -> None:
    dep = make_task(queue="first")
    children = [make_task(queue="then", depends_on=(dep.id,)) for _ in range(5)]
    await queue.enqueue_many([dep, *children])
    record = (root / layout.dependants_file(dep.id)).read_bytes()
    assert decode_ids(record) == [c.id for c in children]
    assert record.count(b"\n\n") == 0, "one append for the whole batch"
    assert names(root / layout.JOURNAL_DIR) == [], "the enqueue's journal is deleted once the batch is durable"
    assert await queue.count(status=TaskStatus.PENDING) == 6
    assert await queue.count(status=TaskStatus.PENDING, queue="then") == 5
    assert {t.waiting for t in await queue.list(queue="then")} == {1}
    stats = {s.queue: s for s in await queue.queue_stats()}
    assert stats["then"].counts[TaskStatus.PENDING.value] == 5
    assert stats["then"].oldest_ready_age is None, "a waiting task is not ready"
    assert await queue.claim_ready(["then"], 10, lease=30, worker_id="w") == []


async def test_a_dependant_on_its_dependencys_lock_stripe_does_not_deadlock(queue: Any) -> None:
    dep = make_task()
    child = make_task(id=same_stripe_id(dep.id), depends_on=(dep.id,))
    with anyio.fail_after(10):
        await queue.enqueue(dep)
        await queue.enqueue(child)
        assert await finish_all(queue) == [dep.id]
        assert await claim_ids(queue) == [child.id]


# -- what tasks without dependencies pay ------------------------------------------------------------------


async def test_tasks_without_dependencies_touch_no_dependency_file_but_one_failed_read_per_end(
    queue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = queue.root.store
    touched: list[tuple[str, str]] = []
    for method in ("read", "write", "append", "exists", "rename", "unlink", "listdir", "create_exclusive", "age"):
        original = getattr(store, method)

        def spy(rel: str, *args: Any, _original: Any = original, _method: str = method, **kwargs: Any) -> Any:
            touched.append((_method, rel))
            return _original(rel, *args, **kwargs)

        monkeypatch.setattr(store, method, spy)

    def dependency_files() -> list[tuple[str, str]]:
        prefixes = (layout.WAITING_DIR, layout.DEPENDANTS_DIR)
        return [(m, rel) for m, rel in touched if rel.startswith(prefixes)]

    tasks = [make_task() for _ in range(3)]
    await queue.enqueue_many(tasks)
    await queue.enqueue(make_task())
    claimed = await queue.claim_ready(["default"], 3, lease=30, worker_id="w")
    assert dependency_files() == [], "enqueue and claim pay nothing"
    assert await queue.finish([ended(claimed[0], OutcomeKind.RETRY)]) == [True]
    assert dependency_files() == [], "a requeue is no end: nothing"
    assert await queue.finish([ended(t) for t in claimed[1:]]) == [True, True]
    assert dependency_files() == [("read", layout.dependants_file(t.id)) for t in claimed[1:]]


# -- crash repair ---------------------------------------------------------------------------------------


async def test_a_crash_between_an_end_and_the_lowering_is_repaired_by_recover(
    queue: Any, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = make_task()
    child = make_task(depends_on=(dep.id,))
    await queue.enqueue_many([dep, child])
    with monkeypatch.context() as crash:
        crash.setattr(dependencies, "release", lambda files, ended: False)  # died with the record taken
        assert await finish_all(queue) == [dep.id]
    assert len(names(root / layout.JOURNAL_DIR)) == 1
    assert (await queue.get(child.id)).waiting == 1
    assert await claim_ids(queue) == []

    assert await queue.recover() == []
    assert names(root / layout.JOURNAL_DIR) == []
    assert (await queue.get(child.id)).waiting == 0
    assert await claim_ids(queue) == [child.id]


async def test_a_crash_inside_an_enqueue_is_repaired_once_the_dependencies_end(
    queue: Any, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_task(), make_task()
    await queue.enqueue_many([first, second])
    child = make_task(depends_on=(first.id, second.id, "f" * 32))
    with monkeypatch.context() as crash:
        crash.setattr(Counting, "register", lambda self: None)  # died after storing the dependant
        crash.setattr(Counting, "close", lambda self: None)
        await queue.enqueue(child)
    assert names(root / layout.DEPENDANTS_DIR) == [], "never registered: no end will lower it"
    assert (await queue.get(child.id)).waiting == 2
    [journal] = names(root / layout.JOURNAL_DIR)

    await queue.recover()
    assert names(root / layout.JOURNAL_DIR) == [journal], "kept while a dependency is live"
    claimed = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert [t.id for t in claimed] == [first.id, second.id]
    assert await queue.finish([ended(claimed[0])]) == [True]
    assert await queue.cancel(second.id)
    await queue.recover()
    assert names(root / layout.JOURNAL_DIR) == []
    assert await claim_ids(queue) == [child.id], "ready once everything it waits for ended"


async def test_a_journal_left_by_an_enqueue_in_flight_keeps_a_dependant_not_stored_yet(queue: Any, root: Path) -> None:
    journal = root / layout.journal_file(new_id())
    journal.write_bytes(encode_ids(["not-stored-yet"]))
    await queue.recover()
    assert journal.exists(), "young: its enqueue may still store it"
    old = time.time() - layout.TMP_MAX_AGE - 60
    os.utime(journal, (old, old))
    await queue.recover()
    assert not journal.exists()


# -- operators --------------------------------------------------------------------------------------------


async def test_a_cancelled_dependant_keeps_counting_so_a_retry_finds_its_count(queue: Any) -> None:
    early, late = make_task(), make_task()
    child = make_task(depends_on=(early.id, late.id))
    await queue.enqueue_many([early, late, child])
    assert await queue.cancel(child.id)
    claimed = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert await queue.finish([ended(claimed[0])]) == [True]
    cancelled = await queue.get(child.id)
    assert cancelled.status is TaskStatus.CANCELLED and cancelled.waiting == 1

    retried = await queue.retry(child.id)
    assert retried is not None and retried.waiting == 1
    assert await claim_ids(queue) == [], "back to waiting, for what it still waits for"
    assert await queue.finish([ended(claimed[1])]) == [True]
    assert await claim_ids(queue) == [child.id]


async def test_pausing_and_resuming_a_waiting_task_keeps_it_waiting(queue: Any, root: Path) -> None:
    dep = make_task()
    child = make_task(depends_on=(dep.id,))
    await queue.enqueue_many([dep, child])
    assert await queue.set_paused(child.id, True)
    assert await queue.set_paused(child.id, False)
    assert names(root / layout.WAITING_DIR) == [f"{child.id}.task"]
    assert await finish_all(queue) == [dep.id]
    assert await claim_ids(queue) == [child.id]


# -- the record format ------------------------------------------------------------------------------------


def test_a_torn_line_of_a_record_is_skipped_and_odd_ids_round_trip() -> None:
    odd = ["a b", "line\nbreak", "slash/and%", "ünï"]
    assert decode_ids(encode_ids(odd)) == odd
    torn = encode_ids(["first", "second"])[:-4]  # a power loss cut the last append short
    assert decode_ids(torn + encode_ids(["third"])) == ["first", "third"]


# -- processes --------------------------------------------------------------------------------------------

FINISHER = textwrap.dedent(
    """
    import json, os, sys, time
    import anyio
    from omniq.backends.file import FileTaskQueue
    from omniq.models import Outcome, OutcomeKind, TaskStatus

    async def main(root, out, start):
        async with FileTaskQueue(root) as queue:
            while time.time() < start:  # line up with the other processes to maximise contention
                await anyio.sleep(0.005)
            got = []
            while True:
                tasks = await queue.claim_ready(["default"], 2, lease=30, worker_id=str(os.getpid()))
                if not tasks:
                    if await queue.count(status=TaskStatus.PENDING) == 0:
                        break
                    await anyio.sleep(0.01)
                    continue
                for task in tasks:
                    deps = await queue.get_many(list(task.depends_on))
                    got.append([task.id, all(d is not None and d.status is TaskStatus.SUCCEEDED for d in deps)])
                outcomes = [Outcome(task_id=t.id, lease_token=t.lease_token, kind=OutcomeKind.SUCCEEDED) for t in tasks]
                assert all(await queue.finish(outcomes))
        with open(out, "w") as handle:
            json.dump(got, handle)

    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
    """
)


def _spawn(tmp_path: Path, root: str, out: Path, start: float) -> subprocess.Popen[bytes]:
    script = tmp_path / "finisher.py"
    if not script.exists():  # rewriting it would truncate it under a process that is still reading it
        script.write_text(FINISHER)
    return subprocess.Popen([sys.executable, str(script), root, str(out), str(start)])


@pytest.mark.slow
async def test_processes_finishing_a_fan_in_ready_it_once_after_its_last_dependency(tmp_path: Path) -> None:
    root = str(tmp_path / "files")
    deps = [make_task() for _ in range(40)]
    callback = make_task(depends_on=tuple(d.id for d in deps))
    async with FileTaskQueue(root) as queue:
        await queue.enqueue_many([*deps, callback])
    start = time.time() + 2.0
    outputs = [tmp_path / f"finished-{i}.json" for i in range(3)]
    procs = [_spawn(tmp_path, root, out, start) for out in outputs]
    for proc in procs:
        assert proc.wait(timeout=60) == 0

    runs = [tuple(run) for out in outputs for run in json.loads(out.read_text())]
    assert sorted(task_id for task_id, _ in runs) == sorted(t.id for t in [*deps, callback]), "each ran once"
    assert (callback.id, True) in runs, "claimed only once all its dependencies had succeeded"
    async with FileTaskQueue(root) as queue:
        assert await queue.count(status=TaskStatus.SUCCEEDED) == len(deps) + 1
    assert names(Path(root) / layout.DEPENDANTS_DIR) == []
    assert names(Path(root) / layout.JOURNAL_DIR) == []
