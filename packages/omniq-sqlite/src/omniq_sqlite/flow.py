"""Flow control in the SQLite engine: limits admitted at claim, a held task woken when a holder leaves, queue pause.

The rules are :mod:`omniq.flow_control`'s, applied inside the claim's write
transaction (``BEGIN IMMEDIATE``), which already serializes every claimer of
the file, in every process:

* The claim UPDATE (:func:`omniq_sqlite.schema.claim_sql`) leases the
  unlimited rows it picks and returns the limited ones as they were, still
  PENDING. :func:`admit_claimed` decides each of those in claim order with
  :func:`omniq.flow_control.admit`: a key's holders come from the partial
  index ``omniq_tasks_holders`` (one lookup per key and claim), its ``tat``
  from ``omniq_rate_limits``. The admitted rows are leased by one UPDATE, the
  refused ones parked by another (``eta`` and ``ready_at`` at the time they
  wait for, ``held`` or ``rate_reserved``), and the claim runs again for the
  places left. A parked row is not ready before its eta, so a waiting task is
  parked once, not looked at by every claim. A key found full has all its
  ready rows in the claimed queues held by one more UPDATE (:func:`_park_key`):
  a backlog of 20,000 is held by one claim of 115-185 ms, where rounds of
  the claim's size took 600-650 ms (the first claim of
  20,000 tasks under ``concurrency_limit=50``, two runs each).
* A holder leaving RUNNING (finish, cancel, recover, purge) wakes the first
  held task of its key (:func:`wake_one`: ``held`` 0, ``eta`` NULL, ready at
  its ``created_at``) in the same transaction. Only a task with a concurrency
  limit takes that path; the caller hints waiting workers as after an enqueue.
* One claim admits at most :func:`omniq.flow_control.claim_share` of a key's
  limit; the rest stays ready at its place for the next claim, often the other
  worker's, so one worker's transaction overlaps another's run.
* A finish that claims (:func:`omniq_sqlite.jobs.finish_and_claim_job`) hands
  the slots it freed to the key's first held tasks in its queues
  (:func:`hand_over`): each is leased in one write, not woken, returned by the
  claim UPDATE and leased (three). Only the slots not handed over wake a task.
  With the writers' turns (:mod:`omniq_sqlite._writers`), the two took the
  limited drain of ``benchmarks/flow_control.py`` (two workers, 20,000 tasks,
  ``concurrency_limit=50``) from 12,800 to 18,000 tasks/s.
* Paused queue names live in ``omniq_paused_queues``; the claim and
  ``wait_for_work`` leave them out.
* Cancel and purge also end (or delete) dependencies: they release the tasks
  waiting on them (:mod:`omniq_sqlite.dependencies`) in the same transaction.

What an unlimited task pays: its claim and finish statements carry a few more
columns and ``CASE`` branches on ``limits IS NULL``, the two partial indexes'
WHERE clauses are evaluated (and written only for limited rows), and the claim
checks one column per row returned. No extra statement.

Times are the host clock (SQLite's engine clock), epoch seconds.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from omniq.flow_control import admit_limits, claim_share
from omniq_sqlite import schema
from omniq_sqlite.dependencies import purged_dependencies, release
from omniq_sqlite.records import LIMITS, RATE_RESERVED, SEQ, chunks, claim_order, limits_of, where

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from omniq.models import TaskStatus

__all__ = [
    "admit_claimed",
    "cancel_job",
    "hand_over",
    "pause_job",
    "paused_queues_job",
    "purge_job",
    "wake_each",
    "wake_one",
]

#: how far past now a parked task's eta is at least, so the claim that parks it does not meet it again.
_MIN_WAIT = 1e-3
#: _Gate.park's verdict on a row past its key's share of this claim: left as it is, ready at its place.
_SKIP = (0.0, 0.0, 0, 0)

_HOLDERS = (
    f"SELECT count(*), min(lease_expires_at) FROM {schema.TASKS} INDEXED BY {schema.IDX_TASKS_HOLDERS} "
    "WHERE status = 'running' AND limit_concurrency IS NOT NULL AND limit_key = ? AND lease_expires_at > ?"
)
_GET_TAT = f"SELECT tat FROM {schema.RATE_LIMITS} WHERE key = ?"
_SET_TAT = f"INSERT OR REPLACE INTO {schema.RATE_LIMITS} (key, tat) VALUES (?, ?)"
_PARK = f"UPDATE {schema.TASKS} SET eta = ?, ready_at = ?, held = ?, rate_reserved = ?, updated_at = ? WHERE seq = ?"
#: the admitted limited rows of a claim (parameters: lease_expires_at, started_at, updated_at, worker_id, *seqs).
_LEASE = (
    f"UPDATE {schema.TASKS} SET status = 'running', attempts = attempts + 1, "
    "lease_token = lower(hex(randomblob(12))), lease_expires_at = ?, started_at = ?, updated_at = ?, "
    "worker_id = ?, held = 0, rate_reserved = 0 WHERE seq IN "
)
#: the first held tasks of a key, in claim order (parameters: now, now, key, how many).
_WAKE = (
    f"UPDATE {schema.TASKS} SET held = 0, eta = NULL, ready_at = min(created_at, ?), updated_at = ? "
    f"WHERE seq IN (SELECT seq FROM {schema.TASKS} INDEXED BY {schema.IDX_TASKS_HELD} "
    "WHERE held = 1 AND status = 'pending' AND limit_key = ? ORDER BY priority DESC, created_at, seq LIMIT ?)"
)
#: a key's first held tasks in the claimed queues, in claim order, as a claim returns them (parameters: key,
#: the queues twice, how many; ``{queues}``: schema.claimed_queues).
_HELD_OF = (
    f"SELECT {schema.TASK_COLUMNS} FROM {schema.TASKS} INDEXED BY {schema.IDX_TASKS_HELD} "
    "WHERE held = 1 AND status = 'pending' AND limit_key = ? AND {queues} "
    "ORDER BY priority DESC, created_at, seq LIMIT ?"
)
#: every ready row of a full key in the claimed queues, held at the key's next free slot (parameters: eta,
#: ready_at, updated_at, now, the queues twice, key, holders); the claim's own ready condition.
_PARK_KEY = (
    f"UPDATE {schema.TASKS} SET eta = ?, ready_at = ?, held = 1, rate_reserved = 0, updated_at = ? "
    f"WHERE seq IN (SELECT seq FROM {schema.TASKS} INDEXED BY {schema.IDX_TASKS_CLAIM} "
    "WHERE status = 'pending' AND held = 0 AND ready_at <= ? AND {queues} "
    "AND limit_key = ? AND limit_concurrency <= ?)"
)
#: a cancel of a task that holds no slot: the one statement cancel always was. Both cancels return whether
#: some task waits on the cancelled one (omniq_sqlite.dependencies).
_CANCEL_UNLIMITED = schema.CANCEL_TASK + " AND limit_concurrency IS NULL RETURNING dependants"
_CANCEL_LIMITED = schema.CANCEL_TASK + " RETURNING dependants"
_SLOT_OF = f"SELECT status, limit_key FROM {schema.TASKS} WHERE id = ? AND limit_concurrency IS NOT NULL"
_PAUSE = f"INSERT OR IGNORE INTO {schema.PAUSED_QUEUES} (queue, paused_at) VALUES (?, ?)"
_RESUME = f"DELETE FROM {schema.PAUSED_QUEUES} WHERE queue = ?"
_PAUSED = f"SELECT queue FROM {schema.PAUSED_QUEUES} ORDER BY queue"


class _Gate:
    """One claim's view of the keys it meets: holders and ``tat`` read once per key, then kept in step."""

    def __init__(self, conn: Any, now: float, deadline: float) -> None:
        self.conn, self.now, self.deadline = conn, now, deadline
        self.holders: dict[str, tuple[int, float | None]] = {}
        self.tats: dict[str, float | None] = {}
        self.changed: dict[str, float] = {}
        self.taken: Counter[str] = Counter()  # holders this claim admitted, per key
        self.full: dict[str, tuple[float, int]] = {}  # keys found full: (their held rows' eta, holders)

    def park(self, row: Any) -> tuple[float, float, int, int] | None:
        """None to lease the claimed ``row`` now, ``_SKIP`` to leave it; else its parked (eta, ready_at, held, rate_reserved).

        Only the two columns the rules read are decoded (parking a backlog decodes no whole task).
        """
        limits = limits_of(row)
        if limits is None:  # a corrupted limits column: leased, for the worker to fail it
            return None
        key = limits.key
        count, earliest = 0, None
        if limits.concurrency is not None:
            if key not in self.holders:
                found = self.conn.execute(_HOLDERS, (key, self.now)).fetchone()
                self.holders[key] = (found[0], found[1])
            count, earliest = self.holders[key]
            if count < limits.concurrency and self.taken[key] >= claim_share(limits.concurrency):
                return _SKIP
        tat = None
        if limits.rate is not None:
            if key not in self.tats:
                stored = self.conn.execute(_GET_TAT, (key,)).fetchone()
                self.tats[key] = stored[0] if stored is not None else None
            tat = self.tats[key]
        verdict = admit_limits(limits, bool(row[RATE_RESERVED]), self.now, count, earliest, tat)
        if verdict.tat is not None:
            self.tats[key] = self.changed[key] = verdict.tat
        if verdict.claim:
            if limits.concurrency is not None:
                self.taken[key] += 1
                self.holders[key] = (count + 1, self.deadline if earliest is None else min(earliest, self.deadline))
            return None
        assert verdict.eta is not None
        eta = max(verdict.eta, self.now + _MIN_WAIT)
        if verdict.held:
            self.full[key] = (eta, count)
        return (eta, eta, int(verdict.held), int(not verdict.held))

    def save(self) -> None:
        """Store the keys' new ``tat``."""
        if self.changed:
            self.conn.executemany(_SET_TAT, list(self.changed.items()))


def admit_claimed(
    conn: Any,
    rows: list[Any],
    claim_more: Callable[[int], list[Any]],
    queues: tuple[str, ...],
    limit: int,
    lease: float,
    worker_id: str,
) -> list[Any]:
    """Finish a claim whose rows include limited ones: lease the admitted, park the others, claim again for the rest.

    Args:
        conn: the claim's connection, inside its write transaction.
        rows: what the claim UPDATE returned (unlimited rows leased, limited ones untouched).
        claim_more: runs the claim UPDATE again for up to that many rows.
        queues: the claimed queues.
        limit: the most rows the claim returns.
        lease: seconds of the lease.
        worker_id: the claiming worker.

    Returns:
        the leased rows, unordered.
    """
    now = time.time()
    gate = _Gate(conn, now, now + lease)
    claimed: list[Any] = []
    bulk_parked: set[str] = set()
    asked = limit
    while True:
        limited = [row for row in rows if row[LIMITS] is not None]
        claimed.extend(row for row in rows if row[LIMITS] is None)
        try:
            limited.sort(key=claim_order)
        except TypeError:  # a corrupted eta: that batch keeps the engine's order
            pass
        take, parked = _decide(conn, gate, limited, now)
        claimed.extend(_lease(conn, take, now, lease, worker_id))
        for key in gate.full.keys() - bulk_parked:  # after the lease: its rows are no longer ready
            _park_key(conn, key, *gate.full[key], queues, now)
            bulk_parked.add(key)
        left = limit - len(claimed)
        if not parked or left <= 0 or len(rows) < asked:  # nothing parked, full, or no more ready rows
            break
        asked = left
        rows = claim_more(left)
    gate.save()
    return claimed


def hand_over(
    conn: Any, keys: Sequence[str], queues: tuple[str, ...], limit: int, lease: float, worker_id: str
) -> tuple[list[Any], list[str]]:
    """Lease to a finishing claimer the held tasks of the slots its finish freed, each in one write.

    A held task woken by a finish is written three times (woken, returned by the claim UPDATE, leased);
    handed over, once. Each key's first held tasks in ``queues`` (claim order) pass :class:`_Gate`
    as a claim's rows do, so the key's share of one claim and its rate still hold.

    Args:
        conn: the finish's connection, inside its write transaction.
        keys: the key of each slot the finish freed (a key once per holder that left).
        queues: the claimed queues.
        limit: the most rows to lease.
        lease: seconds of the lease.
        worker_id: the claiming worker.

    Returns:
        (the leased rows, the key of each freed slot not handed over: for :func:`wake_each`).
    """
    now = time.time()
    gate = _Gate(conn, now, now + lease)
    sql = _HELD_OF.replace("{queues}", schema.claimed_queues(len(queues)))
    leased: list[Any] = []
    left: list[str] = []
    for key, count in Counter(keys).items():
        want = min(count, limit - len(leased))
        rows = conn.execute(sql, (key, *queues, *queues, want)).fetchall() if want > 0 else []
        take, _ = _decide(conn, gate, rows, now)
        leased.extend(_lease(conn, take, now, lease, worker_id))
        left.extend([key] * (count - len(take)))
    gate.save()
    return leased, left


def _decide(conn: Any, gate: _Gate, rows: list[Any], now: float) -> tuple[list[int], int]:
    """Pass limited ``rows`` (in claim order) through ``gate``: park the refused, leave the skipped.

    Returns:
        (the seqs to lease, how many rows were parked).
    """
    take: list[int] = []
    parked: list[tuple[Any, ...]] = []
    for row in rows:
        verdict = gate.park(row)
        if verdict is None:
            take.append(row[SEQ])
        elif verdict is not _SKIP:
            parked.append((*verdict, now, row[SEQ]))
    if parked:
        conn.executemany(_PARK, parked)
    return take, len(parked)


def _lease(conn: Any, seqs: list[int], now: float, lease: float, worker_id: str) -> list[Any]:
    """Lease the admitted limited rows ``seqs``; the rows, as a claim returns them."""
    leased: list[Any] = []
    for chunk in chunks(seqs):
        sql = _LEASE + schema.placeholders(len(chunk)) + f" RETURNING {schema.TASK_COLUMNS}"
        leased.extend(conn.execute(sql, (now + lease, now, now, worker_id, *chunk)).fetchall())
    return leased


def _park_key(conn: Any, key: str, eta: float, holders: int, queues: tuple[str, ...], now: float) -> None:
    """Hold every ready row of ``key`` in ``queues`` that its ``holders`` leave no slot for, in one UPDATE."""
    sql = _PARK_KEY.replace("{queues}", schema.claimed_queues(len(queues)))
    conn.execute(sql, (eta, eta, now, now, *queues, *queues, key, holders))


def wake_one(conn: Any, key: str, now: float) -> bool:
    """Make the first held task of ``key`` (in claim order) ready at its old place; whether there was one."""
    return bool(conn.execute(_WAKE, (now, now, key, 1)).rowcount)


def wake_each(conn: Any, keys: Sequence[str], now: float) -> bool:
    """:func:`wake_one` once per key listed (a key once per holder that left); whether any task was woken.

    One statement per key, not per holder: a finish of 50 holders of one key wakes 50 in one UPDATE.
    """
    woke = False
    for key, count in Counter(keys).items():
        woke = bool(conn.execute(_WAKE, (now, now, key, count)).rowcount) or woke
    return woke


def cancel_job(conn: Any, task_id: str) -> tuple[bool, bool]:
    """Cancel a PENDING or RUNNING task; (cancelled, a task became claimable: a holder left, or a dependency ended)."""
    now = time.time()
    cancelled = conn.execute(_CANCEL_UNLIMITED, (now, now, task_id)).fetchall()
    if cancelled:
        return True, bool(cancelled[0][0]) and release(conn, [task_id], now)
    slot = conn.execute(_SLOT_OF, (task_id,)).fetchone()  # a concurrency-limited task (or none that can be cancelled)
    if slot is None:
        return False, False
    cancelled = conn.execute(_CANCEL_LIMITED, (now, now, task_id)).fetchall()
    if not cancelled:
        return False, False
    woke = slot[0] == "running" and wake_one(conn, slot[1], now)
    ready = bool(cancelled[0][0]) and release(conn, [task_id], now)
    return True, woke or ready


def purge_job(conn: Any, queue: str | None, statuses: Sequence[TaskStatus] | None) -> tuple[int, bool]:
    """Delete tasks (see ``SQLiteTaskQueue.purge``); (how many, whether a task became claimable).

    A task becomes claimable when a purged holder's slot goes to a held task, or when a purged task
    was the last dependency it waited on.
    """
    where_sql, params = where(None, queue, statuses)
    filters = where_sql.replace(" WHERE ", " AND ", 1)
    holders = conn.execute(
        f"SELECT limit_key FROM {schema.TASKS} INDEXED BY {schema.IDX_TASKS_HOLDERS} "
        f"WHERE status = 'running' AND limit_concurrency IS NOT NULL{filters}",
        params,
    ).fetchall()
    dependencies = purged_dependencies(conn, filters, params)
    deleted = conn.execute(f"DELETE FROM {schema.TASKS}{where_sql}", params).rowcount
    now = time.time()
    woke = wake_each(conn, [key for (key,) in holders], now)
    ready = release(conn, dependencies, now) if dependencies else False
    return int(deleted), woke or ready


def pause_job(conn: Any, queue: str, paused: bool) -> bool:
    """Pause or resume ``queue``; whether that changed anything."""
    if paused:
        return bool(conn.execute(_PAUSE, (queue, time.time())).rowcount)
    return bool(conn.execute(_RESUME, (queue,)).rowcount)


def paused_queues_job(conn: Any) -> list[str]:
    """The paused queues' names, sorted."""
    return [row[0] for row in conn.execute(_PAUSED)]
