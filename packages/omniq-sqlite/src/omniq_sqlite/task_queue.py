"""SQLiteTaskQueue: the embedded default task queue.

Each public method is one hop to the database (aiosqlite's thread) running one
transaction: a batch claim is a single ``UPDATE ... WHERE seq IN (SELECT ...
ORDER BY priority DESC, ready_at, seq LIMIT ?) RETURNING`` under ``BEGIN
IMMEDIATE``; a batch finish is one SELECT of the current leases plus
``executemany`` updates (and, fused, the result rows) in one transaction.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from omniq.base import BaseResultStorage, BaseTaskQueue, Capability, lease_expired_error
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus, encode_result
from omniq_sqlite import schema
from omniq_sqlite._wake import RESULTS, WORK
from omniq_sqlite.connection import SETTINGS_OPTIONS, sqlite_connection
from omniq_sqlite.operations import TaskOperations
from omniq_sqlite.records import (
    build_task as _build_task,  # noqa: F401 - benchmarks/record_decode_cost.py
    chunks,
    claim_order,
    encoder,
    from_ts,
    leased_row_to_task as _leased_row_to_task,
    row_to_task as _row_to_task,
    task_params as _task_params,
    to_ts,
    where,
)
from omniq_sqlite.workers import WorkerRegistry

if TYPE_CHECKING:
    import builtins
    from collections.abc import Mapping, Sequence

    from omniq.monitoring import QueueStats, TaskQuery, WorkerInfo

__all__ = ["SQLiteTaskQueue"]

_TERMINAL_KINDS = {OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.EXPIRED}
_ETA_MARGIN = 0.005  # seconds wait_for_work oversleeps a due eta, so the task is claimable when it returns
#: enqueue batches up to this size may run on the caller's thread when the database is idle (Database.write_small).
_SMALL_BATCH = 16


# -- jobs, run on the database's thread ---------------------------------------------------------------


def _enqueue_job(conn: Any, rows: list[tuple[Any, ...]]) -> list[str]:
    if len(rows) == 1 and rows[0][5] is None:
        conn.execute(schema.INSERT_TASK, rows[0])
        return [rows[0][0]]
    if all(row[5] is None for row in rows):
        conn.executemany(schema.INSERT_TASK, rows)
        return [row[0] for row in rows]
    ids = []
    for row in rows:
        inserted = conn.execute(schema.INSERT_TASK, row).rowcount
        if not inserted and row[5] is not None:
            existing = conn.execute(schema.SELECT_ID_BY_UNIQUE_KEY, (row[5],)).fetchone()
            ids.append(existing[0] if existing is not None else row[0])
        else:
            ids.append(row[0])
    return ids


def _claim_job(conn: Any, queues: tuple[str, ...], limit: int, lease: float, worker_id: str) -> list[Any]:
    now = time.time()
    params = (now + lease, now, now, worker_id, *queues, now, limit)
    return conn.execute(schema.claim_sql(len(queues)), params).fetchall()  # type: ignore[no-any-return]


def _extend_job(conn: Any, pairs: list[tuple[str, str]], lease: float) -> set[str]:
    now = time.time()
    extended: set[str] = set()
    for chunk in chunks(pairs):
        values = ", ".join("(?, ?)" for _ in chunk)
        params = [now + lease, now] + [item for pair in chunk for item in pair]
        cursor = conn.execute(
            f"UPDATE {schema.TASKS} SET lease_expires_at = ?, updated_at = ? WHERE status = 'running' "
            f"AND (id, lease_token) IN (VALUES {values}) RETURNING id",
            params,
        )
        extended.update(row[0] for row in cursor)
    return extended


def _finish_job(conn: Any, prepared: list[tuple[Outcome, bytes | None, tuple[Any, ...] | None]]) -> list[bool]:
    now = time.time()
    current: dict[str, tuple[str, float]] = {}
    for chunk in chunks([item[0].task_id for item in prepared]):
        for task_id, token, created in conn.execute(schema.SELECT_LEASES + schema.placeholders(len(chunk)), chunk):
            current[task_id] = (token, created)
    flags: list[bool] = []
    terminal: list[tuple[Any, ...]] = []
    requeue: list[tuple[Any, ...]] = []
    released: list[tuple[Any, ...]] = []
    results: list[tuple[Any, ...]] = []
    for outcome, error, result_row in prepared:
        lease = current.pop(outcome.task_id, None)  # pop: a second outcome for the same lease is refused
        if lease is None or lease[0] != outcome.lease_token:
            flags.append(False)
            if lease is not None:
                current[outcome.task_id] = lease
            continue
        flags.append(True)
        if outcome.kind in _TERMINAL_KINDS:
            terminal.append((outcome.status.value, error, now, now, outcome.task_id))
        else:
            eta = to_ts(outcome.eta)
            ready_at = eta if eta is not None else lease[1]
            if outcome.kind is OutcomeKind.RELEASE:
                released.append((error, eta, ready_at, now, outcome.task_id))
            else:
                requeue.append((error, eta, ready_at, now, outcome.kind.value, outcome.task_id))
        if result_row is not None:
            results.append(result_row)
    if terminal:
        conn.executemany(schema.FINISH_TERMINAL, terminal)
    if requeue:
        conn.executemany(schema.FINISH_REQUEUE, requeue)
    if released:
        conn.executemany(schema.FINISH_RELEASE, released)
    if results:
        conn.executemany(schema.UPSERT_RESULT, results)
    return flags


def _recover_job(conn: Any) -> list[Task]:
    now = time.time()
    recovered = []
    for row in conn.execute(schema.SELECT_EXPIRED_LEASES, (now,)).fetchall():
        task = _leased_row_to_task(row)
        if task.attempts >= task.max_attempts:
            error = lease_expired_error(task)
            conn.execute(schema.RECOVER_FAIL, (encoder.encode(error), now, now, task.id, task.lease_token))
            task = msgspec.structs.replace(
                task,
                status=TaskStatus.FAILED,
                error=error,
                finished_at=from_ts(now),
                updated_at=from_ts(now),
                lease_token=None,
                lease_expires_at=None,
            )
        else:
            conn.execute(schema.RECOVER_REQUEUE, (now, now, now, task.id, task.lease_token))
            task = msgspec.structs.replace(
                task,
                status=TaskStatus.PENDING,
                eta=from_ts(now),
                updated_at=from_ts(now),
                lease_token=None,
                lease_expires_at=None,
            )
        recovered.append(task)
    return recovered


def _select_many_job(conn: Any, ids: list[str]) -> dict[str, Task]:
    found: dict[str, Task] = {}
    for chunk in chunks(ids):
        sql = f"SELECT {schema.TASK_COLUMNS} FROM {schema.TASKS} WHERE id IN {schema.placeholders(len(chunk))}"
        for row in conn.execute(sql, chunk):
            found[row[0]] = _row_to_task(row)
    return found


def _fetch_job(conn: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()  # type: ignore[no-any-return]


def _rowcount_job(conn: Any, sql: str, params: Sequence[Any]) -> int:
    return conn.execute(sql, params).rowcount  # type: ignore[no-any-return]


def _next_ready_job(conn: Any, queues: tuple[str, ...]) -> float | None:
    return conn.execute(schema.next_ready_sql(len(queues)), queues).fetchone()[0]  # type: ignore[no-any-return]


class SQLiteTaskQueue(BaseTaskQueue):
    """Task queue in one SQLite file, safe for many worker and producer processes on one host."""

    capabilities = frozenset(
        {
            Capability.MULTI_PROCESS,
            Capability.BLOCKING_WAIT,
            Capability.FUSED_RESULTS,
            Capability.DURABLE,
            Capability.FORK_SAFE,
            Capability.WORKER_REGISTRY,
        }
    )

    backend_name = "sqlite"
    settings_options = SETTINGS_OPTIONS

    def __init__(self, url: str | os.PathLike[str] | None = None, **options: Any) -> None:
        """Build unconnected; ``options``: see :class:`omniq_sqlite.connection.Options`."""
        self.options, self._connection = sqlite_connection(url, **options)
        self.path, self.url = self.options.path, self.options.url
        self._operations = TaskOperations(self._connection)
        self._workers = WorkerRegistry(self._connection)

    def __repr__(self) -> str:
        return f"SQLiteTaskQueue({self.url!r})"

    async def connect(self) -> None:
        """Open this process's database on the file (or join it); the first to open migrates the schema."""
        await self._connection.connect()

    async def close(self) -> None:
        """Leave the database; the last component of the process on the file closes it."""
        await self._connection.close()

    async def enqueue(self, task: Task) -> str:
        """Store a PENDING task (or return the id of the live task with its unique_key)."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store many tasks in one transaction (``executemany`` when none has a unique_key)."""
        if not tasks:
            return []
        db = await self._connection.client()
        rows = [_task_params(task) for task in tasks]
        if len(rows) <= _SMALL_BATCH:
            return await db.write_small(_enqueue_job, rows, notify=WORK)
        ids = await db.write(_enqueue_job, rows)
        db.notify(WORK)
        return ids

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` ready tasks with one UPDATE ... RETURNING under BEGIN IMMEDIATE."""
        if limit <= 0 or not queues:
            return []
        db = await self._connection.client()
        rows = await db.write(_claim_job, tuple(dict.fromkeys(queues)), limit, lease, worker_id)
        try:
            rows.sort(key=claim_order)  # RETURNING does not keep the subquery's order
        except TypeError:  # a corrupted eta (text in a REAL column): that batch keeps the engine's order
            pass
        return [_leased_row_to_task(row) for row in rows]

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Sleep until a hint arrives, the next scheduled task is due, or ``timeout`` passes."""
        db = await self._connection.client()
        waiter = db.hub.add_waiter(WORK)
        try:
            # Registered first, checked second: a task enqueued in between is seen either way.
            next_ready = await db.read(_next_ready_job, tuple(dict.fromkeys(queues)))
            delay = timeout
            if next_ready is not None:
                # A little past the eta: the loop's monotonic timer and the wall clock may disagree by a hair.
                delay = min(timeout, next_ready - time.time() + _ETA_MARGIN)
            if next_ready is not None and next_ready <= time.time():
                return
            with anyio.move_on_after(delay):
                await waiter.event.wait()
        finally:
            db.hub.remove_waiter(WORK, waiter)

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push back every lease still held, in one statement per 500 leases."""
        if not leases:
            return set()
        db = await self._connection.client()
        return await db.write(_extend_job, list(leases.items()), lease)

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True when ``results`` is a SQLite result storage on the same file."""
        from omniq_sqlite.result_storage import SQLiteResultStorage

        return isinstance(results, SQLiteResultStorage) and results.path == self.path

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply outcomes token-checked in one transaction; fused, write the accepted results too."""
        if not outcomes:
            return []
        fuse = results is not None and self.can_fuse_results(results)
        prepared = []
        for outcome in outcomes:
            error = encoder.encode(outcome.error) if outcome.error is not None else None
            result_row = None
            if fuse and outcome.result is not None:
                result = outcome.result
                result_row = (result.task_id, encode_result(result), to_ts(result.expires_at))
            prepared.append((outcome, error, result_row))
        db = await self._connection.client()
        flags = await db.write(_finish_job, prepared)
        if any(flag and o.kind not in _TERMINAL_KINDS for flag, o in zip(flags, outcomes, strict=True)):
            db.notify(WORK)
        if fuse:
            stored = [row[0] for (_, _, row), flag in zip(prepared, flags, strict=True) if flag and row is not None]
            if stored:
                db.notify(RESULTS, stored)
        return flags

    async def get(self, task_id: str) -> Task | None:
        """Return the task with that id, or None."""
        return (await self.get_many([task_id]))[0]

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks in one hop."""
        if not task_ids:
            return []
        db = await self._connection.client()
        found = await db.read(_select_many_job, list(dict.fromkeys(task_ids)))
        return [found.get(task_id) for task_id in task_ids]

    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Task]:
        """Return tasks filtered by status and queue, newest first."""
        where_sql, params = where(status, queue)
        sql = (
            f"SELECT {schema.TASK_COLUMNS} FROM {schema.TASKS}{where_sql} "
            "ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?"
        )
        db = await self._connection.client()
        rows = await db.read(_fetch_job, sql, [*params, limit, offset])
        return [_row_to_task(row) for row in rows]

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue."""
        where_sql, params = where(status, queue)
        db = await self._connection.client()
        rows = await db.read(_fetch_job, f"SELECT count(*) FROM {schema.TASKS}{where_sql}", params)
        return int(rows[0][0])

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task (its holder loses the lease)."""
        now = time.time()
        db = await self._connection.client()
        return bool(await db.write(_rowcount_job, schema.CANCEL_TASK, (now, now, task_id)))

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal."""
        db = await self._connection.client()
        changed = bool(await db.write(_rowcount_job, schema.SET_PAUSED, (int(paused), time.time(), task_id)))
        if changed and not paused:
            db.notify(WORK)
        return changed

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks (all by default, else those of ``queue`` and/or ``statuses``)."""
        if statuses is not None and not statuses:
            return 0
        where_sql, params = where(None, queue, statuses)
        db = await self._connection.client()
        return int(await db.write(_rowcount_job, f"DELETE FROM {schema.TASKS}{where_sql}", params))

    async def recover(self) -> builtins.list[Task]:  # `list` is a method name in this class
        """Requeue (or fail, when out of attempts) RUNNING tasks whose lease deadline is past."""
        db = await self._connection.client()
        recovered = await db.write(_recover_job)
        if any(task.status is TaskStatus.PENDING for task in recovered):
            db.notify(WORK)
        return recovered

    # -- operations (omniq_sqlite.operations, omniq_sqlite.workers) ------------------------------

    async def list_page(self, query: TaskQuery) -> builtins.list[Task]:
        """A page of tasks, newest first, by key: one walk of the (created_at, id) index."""
        return await self._operations.list_page(query)

    async def queue_stats(self) -> builtins.list[QueueStats]:
        """Per queue: counts by status, oldest ready age, completions per minute (one scan)."""
        return await self._operations.queue_stats()

    async def retry(self, task_id: str) -> Task | None:
        """Run a FAILED, CANCELLED or EXPIRED task again with a fresh attempt budget (one UPDATE)."""
        return await self._operations.retry(task_id)

    async def register_worker(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh ``worker`` in ``omniq_workers`` until ``ttl`` seconds from now."""
        await self._workers.register(worker, ttl)

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker's row; an unknown id is ignored."""
        await self._workers.unregister(worker_id)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Registered workers not expired (host clock), oldest first."""
        return await self._workers.live()
