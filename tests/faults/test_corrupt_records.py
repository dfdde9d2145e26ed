"""Real burst workers meet a task record corrupted in storage: the burst ends, the task is FAILED once.

Before, a naive ``expires_at`` made the worker's TTL check raise TypeError and
an infinite ``result_ttl`` made building the result raise OverflowError; each
run was handed back (RELEASE, attempt refunded) and claimed again at once,
34 times in 3 s, and the burst never ended. The record is corrupted with the
engine's own tools, behind OmniQ's back (the conformance suite covers every
engine's reads and claims of such records; here a whole worker process runs).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from omniq import OmniQ, TaskStatus
from omniq.backends.file import layout

from .conftest import Cluster

pytestmark = pytest.mark.slow

#: per engine, the value each corruptible field gets: what its storage can hold but no task can have.
CORRUPT = {
    "sqlite": {"expires_at": "not a time", "result_ttl": float("inf")},
    # a naive datetime is what msgspec writes as a string without an offset
    "file": {"expires_at": "2030-01-01T00:00:00", "eta": "2020-01-01T00:00:00", "result_ttl": float("inf")},
}
CASES = [(backend, field) for backend, fields in CORRUPT.items() for field in fields]


def _corrupt(backend: str, app: OmniQ, task_id: str, field: str) -> None:
    queue = app.async_app.task_queue
    value = CORRUPT[backend][field]
    if backend == "sqlite":
        with closing(sqlite3.connect(queue.path, isolation_level=None)) as conn:  # type: ignore[attr-defined]
            conn.execute(f"UPDATE omniq_tasks SET {field} = ? WHERE id = ?", (value, task_id))
        return
    folder = Path(queue.url) / layout.queue_dir("default")  # type: ignore[attr-defined]
    [path] = [p for p in folder.iterdir() if task_id in p.name]
    fields = msgspec.msgpack.decode(path.read_bytes())
    fields[field] = value
    path.write_bytes(msgspec.msgpack.encode(fields))


@pytest.mark.parametrize(("backend_env", "field"), CASES, indirect=["backend_env"])
def test_a_corrupted_record_fails_once_and_the_burst_ends(cluster: Cluster, field: str) -> None:
    backend = cluster.env["OMNIQ_BACKEND"]
    with cluster.producer() as app:
        bad = app.enqueue("record", 1, max_retries=3)
        good = app.enqueue("record", 2)
        _corrupt(backend, app, bad, field)
        worker = cluster.worker("--burst")
        output, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, output
        result = app.get_result(bad)
        assert result is not None and result.status is TaskStatus.FAILED and result.attempts == 1, output
        assert result.error is not None and result.error.type == "CorruptRecord" and not result.error.retryable
        assert app.get_result(good).status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]
        assert f"task {bad} (record, queue default, attempt 1) failed: CorruptRecord" in output
    assert cluster.completions() == {2: 1}  # the corrupted task never ran
