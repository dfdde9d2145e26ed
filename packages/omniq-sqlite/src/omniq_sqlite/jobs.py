"""The task queue's jobs: each runs on the database's thread (or inline), inside one transaction for a write.

:class:`~omniq_sqlite.task_queue.SQLiteTaskQueue` hands one of these to
:meth:`Database.write <omniq_sqlite.database.Database.write>` or ``read`` per
call: one hop per batch, not one per statement. A write job may run more than
once (retried while another process holds the lock), so it only touches the
database.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from omniq.base import lease_expired_error
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus
from omniq_sqlite import schema
from omniq_sqlite.dependencies import insert_dependant, release
from omniq_sqlite.flow import admit_claimed, hand_over, wake_each, wake_one
from omniq_sqlite.records import DEPENDS_ON, LIMITS, chunks, encoder, from_ts, leased_row_to_task, row_to_task, to_ts

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "TERMINAL_KINDS",
    "claim_job",
    "enqueue_job",
    "extend_job",
    "fetch_job",
    "finish_job",
    "next_ready_job",
    "recover_job",
    "rowcount_job",
    "select_many_job",
]

#: outcomes that end a task (the others put it back in its queue).
TERMINAL_KINDS = {OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.EXPIRED}
#: the condition of a finished (terminal) task's row.
_FINISHED = "status IN ('succeeded', 'failed', 'cancelled', 'expired')"


def enqueue_job(conn: Any, rows: list[tuple[Any, ...]]) -> list[str]:
    """Insert new PENDING tasks; the ids stored (a task whose unique key is held gets the holder's id).

    A task with dependencies goes through :func:`omniq_sqlite.dependencies.insert_dependant`
    after the rows before it, so a dependency earlier in the batch counts. A row whose id a
    finished task holds replaces that task (:func:`_replace_finished`); a live one is left alone.
    """
    if len(rows) == 1 and rows[0][5] is None and rows[0][DEPENDS_ON] is None:
        _insert_plain(conn, rows)
        return [rows[0][0]]
    if all(row[5] is None and row[DEPENDS_ON] is None for row in rows):
        _insert_plain(conn, rows)
        return [row[0] for row in rows]
    ids: list[str] = []
    plain: list[tuple[Any, ...]] = []  # a run of rows with neither unique key nor dependencies: one executemany
    for row in rows:
        if row[5] is None and row[DEPENDS_ON] is None:
            plain.append(row)
            continue
        if plain:
            _insert_plain(conn, plain)
            ids.extend(item[0] for item in plain)
            plain = []
        inserted = _insert_one(conn, row)
        if not inserted and row[5] is not None:
            existing = conn.execute(schema.SELECT_ID_BY_UNIQUE_KEY, (row[5],)).fetchone()
            if existing is None and _replace_finished(conn, [row[0]]):
                _insert_one(conn, row)  # the key is free and the id was a finished task's
            ids.append(existing[0] if existing is not None else row[0])
        else:
            ids.append(row[0])
    if plain:
        _insert_plain(conn, plain)
        ids.extend(item[0] for item in plain)
    return ids


def _insert_one(conn: Any, row: tuple[Any, ...]) -> int:
    """Insert a row with a unique key or dependencies; its rowcount, after replacing a finished task of its id."""
    inserted: int = (
        insert_dependant(conn, row) if row[DEPENDS_ON] is not None else conn.execute(schema.INSERT_TASK, row).rowcount
    )
    if not inserted and row[5] is None and _replace_finished(conn, [row[0]]):
        return _insert_one(conn, row)
    return inserted


def _insert_plain(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows without unique key or dependencies (one executemany); an ignored one may replace a finished task."""
    if conn.executemany(schema.INSERT_TASK, rows).rowcount < len(rows):  # rare: an id is taken
        finished = _replace_finished(conn, [row[0] for row in rows])
        if finished:
            conn.executemany(schema.INSERT_TASK, [row for row in rows if row[0] in finished])


def _replace_finished(conn: Any, ids: list[str]) -> set[str]:
    """Delete the finished tasks among ``ids`` (and the edges left from their waits); the ids deleted.

    The contract: an enqueue of a finished task's id replaces it (``BaseTaskQueue.retry``'s
    default relies on it); of a live one's, stores nothing. The core's ids are otherwise fresh.
    """
    finished: set[str] = set()
    for chunk in chunks(ids):
        marks = schema.placeholders(len(chunk))
        finished.update(
            found
            for (found,) in conn.execute(
                f"DELETE FROM {schema.TASKS} WHERE id IN {marks} AND {_FINISHED} RETURNING id", chunk
            )
        )
    for chunk in chunks(list(finished)):
        conn.execute(
            f"DELETE FROM {schema.DEPENDENCIES} WHERE dependant_id IN {schema.placeholders(len(chunk))}", chunk
        )
    return finished


def claim_job(conn: Any, queues: tuple[str, ...], limit: int, lease: float, worker_id: str) -> list[Any]:
    """Lease up to ``limit`` ready tasks of ``queues`` in one UPDATE ... RETURNING; the rows claimed.

    Rows with limits come back untouched and go through :func:`omniq_sqlite.flow.admit_claimed`.
    """
    now = time.time()
    sql = schema.claim_sql(len(queues))
    rows: list[Any] = conn.execute(sql, schema.claim_params(queues, now, lease, worker_id, limit)).fetchall()
    for row in rows:
        if row[LIMITS] is not None:

            def claim_more(more: int) -> list[Any]:
                return conn.execute(sql, schema.claim_params(queues, now, lease, worker_id, more)).fetchall()  # type: ignore[no-any-return]

            return admit_claimed(conn, rows, claim_more, queues, limit, lease, worker_id)
    return rows


def finish_and_claim_job(
    conn: Any,
    prepared: list[tuple[Outcome, bytes | None, tuple[Any, ...] | None]],
    queues: tuple[str, ...],
    limit: int,
    lease: float,
    worker_id: str,
) -> tuple[tuple[list[bool], bool], list[Any]]:
    """:func:`finish_job`, then :func:`claim_job` in the same transaction (it sees the slots the finish freed).

    The held tasks of the slots freed are handed over first (:func:`omniq_sqlite.flow.hand_over`), so a
    task waiting on a key's slot is leased in one write; only the slots not handed over wake a held task.
    The claim runs only when nothing was handed over: the tasks woken for the rest (past a key's share
    of one claim) are left to the other claimers, so workers sharing a key each keep their share.
    """
    flags, slots, ready = _finish(conn, prepared)
    handed, left = hand_over(conn, slots, queues, limit, lease, worker_id) if slots else ([], [])
    woke = wake_each(conn, left, time.time()) or ready
    return (flags, woke), handed or claim_job(conn, queues, limit, lease, worker_id)


def extend_job(conn: Any, pairs: list[tuple[str, str]], lease: float) -> set[str]:
    """Push back each lease still held by its token; the ids extended."""
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


def _current_leases(conn: Any, task_ids: list[str]) -> dict[str, tuple[str, float, str | None, int]]:
    """Per RUNNING task of ``task_ids``: its lease token, ``created_at``, slot key (or None), whether it has dependants."""
    current: dict[str, tuple[str, float, str | None, int]] = {}
    for chunk in chunks(task_ids):
        for task_id, token, created, slot, dependants in conn.execute(
            schema.SELECT_LEASES + schema.placeholders(len(chunk)), chunk
        ):
            current[task_id] = (token, created, slot, dependants)
    return current


def finish_job(
    conn: Any, prepared: list[tuple[Outcome, bytes | None, tuple[Any, ...] | None]]
) -> tuple[list[bool], bool]:
    """Apply token-checked outcomes (and fused result rows).

    Returns:
        a flag per outcome, True when accepted; whether a task became claimable (a holder of its key left,
        or the last dependency it waited on ended).
    """
    flags, slots, ready = _finish(conn, prepared)
    return flags, wake_each(conn, slots, time.time()) or ready


def _finish(
    conn: Any, prepared: list[tuple[Outcome, bytes | None, tuple[Any, ...] | None]]
) -> tuple[list[bool], list[str], bool]:
    """:func:`finish_job` but the wake-ups: (flags, the key of each slot freed, whether a dependant became ready)."""
    now = time.time()
    current = _current_leases(conn, [item[0].task_id for item in prepared])
    slots: list[str] = []  # keys of the concurrency slots the accepted outcomes give up
    flags: list[bool] = []
    terminal: list[tuple[Any, ...]] = []
    requeue: list[tuple[Any, ...]] = []
    released: list[tuple[Any, ...]] = []
    results: list[tuple[Any, ...]] = []
    ended: list[str] = []  # accepted terminal outcomes of tasks that some task waits on
    for outcome, error, result_row in prepared:
        lease = current.pop(outcome.task_id, None)  # pop: a second outcome for the same lease is refused
        if lease is None or lease[0] != outcome.lease_token:
            flags.append(False)
            if lease is not None:
                current[outcome.task_id] = lease
            continue
        flags.append(True)
        if lease[2] is not None:
            slots.append(lease[2])
        if outcome.kind in TERMINAL_KINDS:
            terminal.append((outcome.status.value, error, now, now, outcome.task_id))
            if lease[3]:
                ended.append(outcome.task_id)
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
    return flags, slots, release(conn, ended, now) if ended else False


def recover_job(conn: Any) -> tuple[list[Task], bool]:
    """Requeue, or fail when out of attempts, RUNNING tasks whose lease deadline is past.

    Returns:
        those tasks; whether a task became claimable (a recovered task held a concurrency slot of its key,
        or a failed one was the last dependency a task waited on).
    """
    now = time.time()
    recovered = []
    woke = False
    ended: list[str] = []  # failed tasks that some task waits on
    for row in conn.execute(schema.SELECT_EXPIRED_LEASES, (now,)).fetchall():
        task = leased_row_to_task(row)
        if task.attempts >= task.max_attempts:
            error = lease_expired_error(task)
            failed = conn.execute(schema.RECOVER_FAIL, (encoder.encode(error), now, now, task.id, task.lease_token))
            if any(dependants for (dependants,) in failed.fetchall()):
                ended.append(task.id)
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
        if task.limits is not None and task.limits.concurrency is not None:
            woke = wake_one(conn, task.limits.key, now) or woke
    if ended:
        woke = release(conn, ended, now) or woke
    return recovered, woke


def select_many_job(conn: Any, ids: list[str]) -> dict[str, Task]:
    """The tasks with those ids, by id (unknown ids are absent)."""
    found: dict[str, Task] = {}
    for chunk in chunks(ids):
        sql = f"SELECT {schema.TASK_COLUMNS} FROM {schema.TASKS} WHERE id IN {schema.placeholders(len(chunk))}"
        for row in conn.execute(sql, chunk):
            found[row[0]] = row_to_task(row)
    return found


def fetch_job(conn: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    """Every row of ``sql``."""
    return conn.execute(sql, params).fetchall()  # type: ignore[no-any-return]


def rowcount_job(conn: Any, sql: str, params: Sequence[Any]) -> int:
    """The number of rows ``sql`` changed."""
    return conn.execute(sql, params).rowcount  # type: ignore[no-any-return]


def next_ready_job(conn: Any, queues: tuple[str, ...]) -> float | None:
    """The earliest ``ready_at`` among claimable tasks of ``queues`` (None when none)."""
    return conn.execute(schema.next_ready_sql(len(queues)), queues * 4).fetchone()[0]  # type: ignore[no-any-return]
