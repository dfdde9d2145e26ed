"""Engine-specific tests of the file backend: crash debris, corruption, processes sharing one directory."""

from __future__ import annotations

import logging
import os
import sys
import time

import anyio
import pytest

from omniq.backends.file import FileEventStorage, FileResultStorage, FileTaskQueue, layout
from omniq.config import Settings
from omniq.errors import BackendUnavailableError, ConfigurationError, SerializationError
from omniq.models import Outcome, OutcomeKind, TaskStatus, encode_task
from omniq.plugins import resolve_backend
from omniq.testing import make_task
from omniq.testing.fixtures import make_event, make_result, now_ms

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path):
    return tmp_path / "files"


@pytest.fixture
async def queue(root):
    async with FileTaskQueue(str(root)) as q:
        yield q


def _files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- crash safety -----------------------------------------------------------------------------------------


async def test_half_written_temp_files_are_invisible(queue, root):
    task = make_task()
    await queue.enqueue(task)
    # What a writer killed mid-write leaves: a partial temp file in tmp/, and stray names in task folders.
    body = encode_task(make_task())
    (root / layout.TMP_DIR / "0123abcd.tmp").write_bytes(body[: len(body) // 2])
    qdir = root / layout.queue_dir("default")
    (qdir / ".partial.task.tmp").write_bytes(body[:10])
    (qdir / "not-a-task-name.task").write_bytes(body[:10])
    (root / layout.RUNNING_DIR / "x.task.tmp").write_bytes(body[:10])

    assert await queue.count() == 1
    assert [t.id for t in await queue.list()] == [task.id]
    claimed = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert [t.id for t in claimed] == [task.id]
    assert await queue.claim_ready(["default"], 10, lease=30, worker_id="w") == []
    assert await queue.recover() == []


async def test_recover_sweeps_only_old_temp_files(queue, root):
    old = root / layout.TMP_DIR / "old.tmp"
    young = root / layout.TMP_DIR / "young.tmp"
    old.write_bytes(b"x")
    young.write_bytes(b"x")
    stamp = time.time() - layout.TMP_MAX_AGE - 60
    os.utime(old, (stamp, stamp))
    await queue.recover()
    assert _files(root / layout.TMP_DIR) == ["young.tmp"]


async def test_every_write_leaves_no_temp_file(queue, root):
    tasks = [make_task() for _ in range(5)]
    await queue.enqueue_many(tasks)
    claimed = await queue.claim_ready(["default"], 5, lease=30, worker_id="w")
    await queue.extend({t.id: t.lease_token for t in claimed}, 30)
    await queue.finish([Outcome(task_id=t.id, lease_token=t.lease_token, kind=OutcomeKind.SUCCEEDED) for t in claimed])
    assert _files(root / layout.TMP_DIR) == []
    assert len(_files(root / layout.DONE_DIR)) == 5


async def test_corrupted_task_file_is_quarantined_not_fatal(queue, root, caplog):
    good = make_task()
    await queue.enqueue(good)
    bad = make_task(priority=10)  # sorts first, so the claimer meets it before the good one
    await queue.enqueue(bad)
    [bad_file] = [p for p in (root / layout.queue_dir("default")).iterdir() if bad.id in p.name]
    bad_file.write_bytes(b"\xc1 definitely not msgpack")

    with caplog.at_level(logging.ERROR, logger="omniq.file"):
        claimed = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert [t.id for t in claimed] == [good.id]
    assert len(_files(root / layout.CORRUPT_DIR)) == 1  # kept for inspection, never deleted
    assert "corrupted" in caplog.text


async def test_claim_that_crashed_before_rewriting_is_recovered(queue, root):
    task = make_task()
    await queue.enqueue(task)
    # A claimer killed between its rename and its rewrite leaves the PENDING body in running/.
    [pending] = list((root / layout.queue_dir("default")).iterdir())
    pending.rename(root / layout.task_file(layout.RUNNING_DIR, task.id))

    [recovered] = await queue.recover()
    assert recovered.status is TaskStatus.PENDING
    assert recovered.attempts == 0
    [claimed] = await queue.claim_ready(["default"], 1, lease=30, worker_id="w")
    assert claimed.id == task.id
    assert claimed.attempts == 1


async def test_finish_that_crashed_after_writing_done_is_cleaned_up(queue, root):
    task = make_task()
    await queue.enqueue(task)
    [claimed] = await queue.claim_ready(["default"], 1, lease=0.2, worker_id="w")
    running = root / layout.task_file(layout.RUNNING_DIR, task.id)
    leftover = running.read_bytes()
    await queue.finish([Outcome(task_id=task.id, lease_token=claimed.lease_token, kind=OutcomeKind.SUCCEEDED)])
    running.write_bytes(leftover)  # as if the process died before unlinking running/
    await anyio.sleep(0.3)

    assert await queue.recover() == []
    assert not running.exists()
    stored = await queue.get(task.id)
    assert stored is not None
    assert stored.status is TaskStatus.SUCCEEDED


async def test_stale_unique_marker_does_not_block_the_key(queue, root):
    (root / layout.unique_file("report")).write_bytes(b"id-of-a-task-that-never-got-written")
    task = make_task(unique_key="report")
    assert await queue.enqueue(task) == task.id
    assert await queue.enqueue(make_task(unique_key="report")) == task.id


async def test_data_survives_a_new_instance(root):
    task = make_task()
    async with FileTaskQueue(str(root)) as first:
        await first.enqueue(task)
    async with FileTaskQueue(f"file://{root}") as second:
        stored = await second.get(task.id)
    assert stored == task


async def test_odd_queue_names_and_ids_round_trip(queue):
    tasks = [make_task(id="a/b_c d%2F..", queue="../../etc"), make_task(id="x_y", queue="q/with/slashes")]
    await queue.enqueue_many(tasks)
    assert [await queue.get(t.id) for t in tasks] == tasks
    assert await queue.count(status=TaskStatus.PENDING, queue="../../etc") == 1
    claimed = await queue.claim_ready(["q/with/slashes"], 5, lease=30, worker_id="w")
    assert [t.id for t in claimed] == ["x_y"]


async def test_same_id_enqueued_twice_while_pending_runs_once(queue, caplog):
    task = make_task()
    assert await queue.enqueue(task) == task.id
    assert await queue.enqueue(task) == task.id
    with caplog.at_level(logging.WARNING, logger="omniq.file"):
        first = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
        assert [t.id for t in first] == [task.id]
        done = Outcome(task_id=task.id, lease_token=first[0].lease_token, kind=OutcomeKind.SUCCEEDED)
        assert await queue.finish([done]) == [True]
        assert await queue.claim_ready(["default"], 10, lease=30, worker_id="w") == []
    assert "dropped the duplicate" in caplog.text
    assert await queue.count() == 1


async def test_release_without_eta_keeps_the_tasks_place(queue):
    older, newer = make_task(created_at=now_ms(-10)), make_task()
    await queue.enqueue_many([older, newer])
    [held] = await queue.claim_ready(["default"], 1, lease=30, worker_id="w")
    assert held.id == older.id
    release = Outcome(task_id=held.id, lease_token=held.lease_token, kind=OutcomeKind.RELEASE)
    assert await queue.finish([release]) == [True]
    claimed = await queue.claim_ready(["default"], 2, lease=30, worker_id="w")
    assert [t.id for t in claimed] == [older.id, newer.id]


async def test_corrupted_result_is_a_serialization_error(root):
    async with FileResultStorage(str(root)) as results:
        result = make_result()
        await results.set(result)
        (root / layout.result_file(result.task_id)).write_bytes(b"\xc1garbage")
        with pytest.raises(SerializationError, match="corrupted"):
            await results.get(result.task_id)


async def test_event_purge_splits_a_batch_file(root):
    async with FileEventStorage(str(root)) as events:
        early, late = make_event(timestamp=now_ms(-60)), make_event(timestamp=now_ms())
        await events.append([late, early])
        assert await events.purge(before=now_ms(-30)) == 1
        assert await events.query() == [late]
        assert await events.purge() == 1
        assert await events.query() == []


# -- configuration ----------------------------------------------------------------------------------------


async def test_from_settings_defaults_to_base_dir(tmp_path):
    settings = Settings(backend="file", base_dir=tmp_path / "data", task_queue_options={"fsync": False})
    queue = FileTaskQueue.from_settings(settings.component("task_queue"), settings)
    assert queue.url == str(tmp_path / "data" / "files")
    assert queue.root.fsync is False
    async with queue:
        await queue.enqueue(make_task())
    assert (tmp_path / "data" / "files" / layout.PENDING_DIR).is_dir()


def test_registered_through_the_entry_point():
    assert resolve_backend("task_queue", "file") is FileTaskQueue
    assert resolve_backend("result_storage", "file") is FileResultStorage
    assert resolve_backend("event_storage", "file") is FileEventStorage


def test_fsspec_url_without_fsspec_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "fsspec", None)  # makes `import fsspec` raise ImportError
    with pytest.raises(ConfigurationError, match=r"pip install '\./packages/omniq-core\[file\]'"):
        FileTaskQueue("memory://nope")
    FileTaskQueue(str(tmp_path))  # local directories never need fsspec


def test_bad_settings_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="poll_interval"):
        FileTaskQueue("/tmp/x", poll_interval=0)
    with pytest.raises(ConfigurationError, match="empty"):
        FileTaskQueue("  ")


async def test_unusable_root_is_backend_unavailable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(BackendUnavailableError):
        async with FileTaskQueue(str(blocker / "root")):
            pass


def test_only_local_roots_are_multi_process(tmp_path):
    pytest.importorskip("fsspec")
    assert FileTaskQueue(str(tmp_path)).root.multi_process
    assert not FileTaskQueue("memory://omniq-multi-process-check").root.multi_process
