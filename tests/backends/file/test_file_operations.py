"""Engine-specific tests of the file backend's operations: where retry moves a task, worker files, stats from names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from omniq.backends.file import FileTaskQueue, layout
from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.monitoring import WorkerInfo
from omniq.testing import make_task, make_worker
from omniq.testing.fixtures import now_ms

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "files"


@pytest.fixture
async def queue(root: Path) -> Any:
    async with FileTaskQueue(str(root)) as q:
        yield q


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def worker(worker_id: str) -> WorkerInfo:
    return make_worker(-1, id=worker_id)


async def test_retry_moves_the_task_from_done_back_to_its_queue_folder(queue: Any, root: Path) -> None:
    task = make_task(unique_key="k")
    await queue.enqueue(task)
    [held] = await queue.claim_ready(["default"], 1, lease=30, worker_id="w")
    failed = Outcome(task_id=held.id, lease_token=held.lease_token, kind=OutcomeKind.FAILED)
    assert await queue.finish([failed]) == [True]
    assert names(root / layout.DONE_DIR) == [f"{task.id}.task"]
    assert names(root / layout.UNIQUE_DIR) == []
    retried = await queue.retry(task.id)
    assert retried is not None and retried.status is TaskStatus.PENDING
    assert names(root / layout.DONE_DIR) == []
    [pending] = names(root / layout.queue_dir("default"))
    assert pending.endswith(f"_{task.id}.task")
    assert (root / layout.unique_file("k")).read_bytes() == task.id.encode()  # the key is held again


async def test_an_expired_worker_file_is_removed_when_read(queue: Any, root: Path) -> None:
    await queue.register_worker(worker("gone"), 0.05)
    await queue.register_worker(worker("live"), 30)
    folder = root / layout.WORKERS_DIR
    assert names(folder) == ["gone.worker", "live.worker"]
    await anyio.sleep(0.1)
    assert [w.id for w in await queue.list_workers()] == ["live"]
    assert names(folder) == ["live.worker"]
    await queue.unregister_worker("live")
    assert names(folder) == []


async def test_a_corrupted_worker_file_or_debris_is_skipped(queue: Any, root: Path) -> None:
    await queue.register_worker(worker("live"), 30)
    folder = root / layout.WORKERS_DIR
    (folder / "bad.worker").write_bytes(b"\xc1 not msgpack")
    (folder / "other.worker").write_bytes(msgspec.msgpack.encode({"id": "x"}))
    (folder / "x.worker.tmp").write_bytes(b"partial")
    assert [w.id for w in await queue.list_workers()] == ["live"]


async def test_a_root_made_before_the_registry_gains_its_folder(root: Path) -> None:
    async with FileTaskQueue(str(root)) as q:
        await q.enqueue(make_task())
    (root / layout.WORKERS_DIR).rmdir()  # a root as an older OmniQ left it
    async with FileTaskQueue(str(root)) as q:
        assert await q.list_workers() == []
        await q.register_worker(worker("w"), 30)
        assert [w.id for w in await q.list_workers()] == ["w"]


async def test_stats_age_ready_tasks_from_their_file_names(queue: Any, root: Path) -> None:
    old = make_task(created_at=now_ms(-300))
    await queue.enqueue_many([old, make_task(eta=now_ms(3600))])
    # The body is not read for a ready task: the name says when it became ready.
    [path] = [p for p in (root / layout.queue_dir("default")).iterdir() if old.id in p.name]
    path.write_bytes(b"\xc1 unreadable")
    [stats] = await queue.queue_stats()
    assert stats.counts["pending"] == 2
    assert stats.oldest_ready_age is not None and 299 <= stats.oldest_ready_age < 400
