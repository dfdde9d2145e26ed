"""Every table, index and SQL statement of the SQLite backend, and the migrations.

The schema is versioned: ``omniq_schema_version`` holds one row per applied
migration. :func:`migrate` runs under ``BEGIN IMMEDIATE``, so when several
processes open a fresh database at once exactly one applies each migration
and the others see it applied.

Times are REAL epoch seconds (UTC) taken from the host clock, which is the
"engine clock" of SQLite.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from omniq.errors import BackendError

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "DEPENDENCIES",
    "EVENTS",
    "LATEST_VERSION",
    "MIGRATIONS",
    "PAUSED_QUEUES",
    "RATE_LIMITS",
    "RESULTS",
    "SCHEMA_VERSION",
    "TASKS",
    "TASK_COLUMNS",
    "WORKERS",
    "claim_params",
    "claimed_queues",
    "claim_sql",
    "migrate",
]

# -- names -------------------------------------------------------------------------------------------

#: one row per applied migration.
SCHEMA_VERSION = "omniq_schema_version"
#: one row per task; the hot table.
TASKS = "omniq_tasks"
#: one row per finished task (or latest run of a schedule), msgpack-encoded TaskResult.
RESULTS = "omniq_results"
#: append-only task history.
EVENTS = "omniq_events"
#: one row per registered worker process (the worker registry), msgpack-encoded WorkerInfo.
WORKERS = "omniq_workers"
#: per-key theoretical arrival time of rate limits (GCRA, omniq.flow_control).
RATE_LIMITS = "omniq_rate_limits"
#: the names of the paused queues (set_queue_paused).
PAUSED_QUEUES = "omniq_paused_queues"
#: one row per (dependency, dependant) edge while the dependency is not terminal (Capability.DEPENDENCIES).
DEPENDENCIES = "omniq_dependencies"
#: claim order among ready tasks of a queue (partial: only claimable rows; version 4 leaves out waiting ones).
IDX_TASKS_CLAIM = "omniq_tasks_claim"
#: at most one PENDING/RUNNING task per unique_key, enforced atomically.
IDX_TASKS_UNIQUE = "omniq_tasks_unique"
#: RUNNING tasks by lease deadline, for recover().
IDX_TASKS_LEASE = "omniq_tasks_lease"
#: list()/count()/purge() by status and queue (version 1; dropped by version 2, see _V2).
IDX_TASKS_STATUS = "omniq_tasks_status"
#: results by expiry, for purge().
IDX_RESULTS_EXPIRES = "omniq_results_expires"
#: a task's history.
IDX_EVENTS_TASK = "omniq_events_task"
#: events by time, for query(since/until) and purge(before).
IDX_EVENTS_TIME = "omniq_events_time"
#: tasks newest first, for list_page's keyset walk (created_at, id).
IDX_TASKS_CREATED = "omniq_tasks_created"
#: workers by expiry, for the registry's cleanup.
IDX_WORKERS_EXPIRES = "omniq_workers_expires"
#: a concurrency key's holders (RUNNING, concurrency-limited) by lease deadline; empty without limits.
IDX_TASKS_HOLDERS = "omniq_tasks_holders"
#: a key's held tasks in claim order, for the wake-up of one when a holder leaves; empty without limits.
IDX_TASKS_HELD = "omniq_tasks_held"
#: held tasks by the time they are looked at again (version 5: they are no longer in the claim index).
IDX_TASKS_HELD_DUE = "omniq_tasks_held_due"

# -- migrations ------------------------------------------------------------------------------------

_V1 = (
    f"""CREATE TABLE {TASKS} (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        func TEXT NOT NULL,
        payload BLOB NOT NULL,
        queue TEXT NOT NULL,
        priority INTEGER NOT NULL,
        unique_key TEXT,
        status TEXT NOT NULL,
        eta REAL,
        ready_at REAL NOT NULL,
        interval REAL,
        cron TEXT,
        paused INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        max_retries INTEGER NOT NULL,
        timeout REAL,
        expires_at REAL,
        result_ttl REAL,
        depends_on BLOB,
        created_at REAL NOT NULL,
        updated_at REAL,
        started_at REAL,
        finished_at REAL,
        lease_token TEXT,
        lease_expires_at REAL,
        worker_id TEXT,
        error BLOB
    )""",
    f"""CREATE INDEX {IDX_TASKS_CLAIM} ON {TASKS} (queue, priority DESC, ready_at, seq)
        WHERE status = 'pending' AND paused = 0""",
    f"""CREATE UNIQUE INDEX {IDX_TASKS_UNIQUE} ON {TASKS} (unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('pending', 'running')""",
    f"CREATE INDEX {IDX_TASKS_LEASE} ON {TASKS} (lease_expires_at) WHERE status = 'running'",
    f"CREATE INDEX {IDX_TASKS_STATUS} ON {TASKS} (status, queue)",
    f"""CREATE TABLE {RESULTS} (
        task_id TEXT PRIMARY KEY,
        data BLOB NOT NULL,
        expires_at REAL
    ) WITHOUT ROWID""",
    f"CREATE INDEX {IDX_RESULTS_EXPIRES} ON {RESULTS} (expires_at) WHERE expires_at IS NOT NULL",
    f"""CREATE TABLE {EVENTS} (
        seq INTEGER PRIMARY KEY,
        task_id TEXT NOT NULL,
        type TEXT NOT NULL,
        timestamp REAL NOT NULL,
        queue TEXT NOT NULL,
        func TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        worker_id TEXT,
        message TEXT NOT NULL
    )""",
    f"CREATE INDEX {IDX_EVENTS_TASK} ON {EVENTS} (task_id, timestamp)",
    f"CREATE INDEX {IDX_EVENTS_TIME} ON {EVENTS} (timestamp)",
)

#: issue 15: Task.headers (msgpack map, NULL without), pages of tasks by (created_at, id), the worker registry.
#: The (created_at, id) index replaces (status, queue): a fifth index on the hot table made a single enqueue
#: about 15 % dearer (one more B-tree page per commit, in the WAL and the checkpoint); the status index moved
#: two entries at every claim and finish. count() and purge() by status/queue now scan the table (operator
#: calls); list() and list_page() walk the new index.
_V2 = (
    f"ALTER TABLE {TASKS} ADD COLUMN headers BLOB",
    f"DROP INDEX {IDX_TASKS_STATUS}",
    f"CREATE INDEX {IDX_TASKS_CREATED} ON {TASKS} (created_at, id)",
    f"""CREATE TABLE {WORKERS} (
        id TEXT PRIMARY KEY,
        info BLOB NOT NULL,
        started_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    f"CREATE INDEX {IDX_WORKERS_EXPIRES} ON {WORKERS} (expires_at)",
)

#: issue 17: flow control (omniq.flow_control) and queue pause. ``limits`` is the encoded Limits (NULL: none);
#: ``limit_key`` / ``limit_concurrency`` are its key and concurrency as columns for the two partial indexes,
#: which hold only limited tasks: an unlimited task's insert, claim and finish evaluate their WHERE and write
#: nothing to them. Rows written before keep working: NULL limits, not held, not reserved.
_V3 = (
    f"ALTER TABLE {TASKS} ADD COLUMN limits BLOB",
    f"ALTER TABLE {TASKS} ADD COLUMN limit_key TEXT",
    f"ALTER TABLE {TASKS} ADD COLUMN limit_concurrency INTEGER",
    f"ALTER TABLE {TASKS} ADD COLUMN held INTEGER NOT NULL DEFAULT 0",
    f"ALTER TABLE {TASKS} ADD COLUMN rate_reserved INTEGER NOT NULL DEFAULT 0",
    f"""CREATE INDEX {IDX_TASKS_HOLDERS} ON {TASKS} (limit_key, lease_expires_at)
        WHERE status = 'running' AND limit_concurrency IS NOT NULL""",
    f"""CREATE INDEX {IDX_TASKS_HELD} ON {TASKS} (limit_key, priority DESC, created_at, seq)
        WHERE held = 1 AND status = 'pending'""",
    f"CREATE TABLE {RATE_LIMITS} (key TEXT PRIMARY KEY, tat REAL NOT NULL) WITHOUT ROWID",
    f"CREATE TABLE {PAUSED_QUEUES} (queue TEXT PRIMARY KEY, paused_at REAL NOT NULL) WITHOUT ROWID",
)

#: issue 18: dependencies held in the engine (omniq_sqlite.dependencies). ``waiting`` counts the dependencies a
#: task still waits for; the claim index is rebuilt to leave those tasks out (a waiting task is simply not in
#: it, so the claim walks past nothing and keeps its plan). ``dependants`` flags a task that some task waits on,
#: so the finish of one that nobody waits on (the lease SELECT reads the flag) runs no statement more.
#: ``omniq_dependencies`` holds the edges, keyed by dependency (the lookup when one ends). Rows written before
#: keep working: waiting 0, no dependants. Rebuilding the claim index reads the pending tasks once.
_V4 = (
    f"ALTER TABLE {TASKS} ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0",
    f"ALTER TABLE {TASKS} ADD COLUMN dependants INTEGER NOT NULL DEFAULT 0",
    f"DROP INDEX {IDX_TASKS_CLAIM}",
    f"""CREATE INDEX {IDX_TASKS_CLAIM} ON {TASKS} (queue, priority DESC, ready_at, seq)
        WHERE status = 'pending' AND paused = 0 AND waiting = 0""",
    f"""CREATE TABLE {DEPENDENCIES} (
        dependency_id TEXT NOT NULL,
        dependant_id TEXT NOT NULL,
        PRIMARY KEY (dependency_id, dependant_id)
    ) WITHOUT ROWID""",
    f"CREATE INDEX {DEPENDENCIES}_dependant ON {DEPENDENCIES} (dependant_id)",
)

#: issue 17: a held task (its key's concurrency full) leaves the claim index, which a claim otherwise walked to
#: its end whenever fewer tasks were ready than it asked for: O(held backlog) per claim, 3 ms per claim with
#: 20,000 held. It waits in a partial index by its eta of its own (the claim and next_ready_sql look there
#: too, one probe each), until a holder leaving wakes it (omniq_sqlite.flow) or its eta passes.
_V5 = (
    f"DROP INDEX {IDX_TASKS_CLAIM}",
    f"""CREATE INDEX {IDX_TASKS_CLAIM} ON {TASKS} (queue, priority DESC, ready_at, seq)
        WHERE status = 'pending' AND paused = 0 AND waiting = 0 AND held = 0""",
    f"CREATE INDEX {IDX_TASKS_HELD_DUE} ON {TASKS} (eta) WHERE held = 1 AND status = 'pending'",
)

#: (version, statements), applied in order; append new versions, never edit old ones.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, _V1), (2, _V2), (3, _V3), (4, _V4), (5, _V5))
LATEST_VERSION = MIGRATIONS[-1][0]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to :data:`LATEST_VERSION`; safe to run concurrently from many processes.

    Must be called outside a transaction on an autocommit connection.

    Returns:
        the number of migrations this call applied (0 when already current).

    Raises:
        BackendError: the database was created by a newer omniq-sqlite.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION} (version INTEGER PRIMARY KEY, applied_at REAL)")
        current = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_VERSION}").fetchone()[0]
        if current > LATEST_VERSION:
            raise BackendError(
                f"the database schema is at version {current}, newer than this omniq-sqlite "
                f"supports ({LATEST_VERSION}); upgrade omniq-sqlite"
            )
        applied = 0
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"INSERT INTO {SCHEMA_VERSION} (version, applied_at) VALUES (?, ?)", (version, time.time()))
            applied += 1
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied


# -- statements ------------------------------------------------------------------------------------


def placeholders(count: int) -> str:
    """Return ``(?, ?, ...)`` with ``count`` markers."""
    return "(" + ", ".join("?" * count) + ")"


#: column order of every task SELECT / RETURNING; see records.build_task.
TASK_COLUMNS = (
    "id, func, payload, queue, priority, unique_key, status, eta, interval, cron, paused, attempts, "
    "max_retries, timeout, expires_at, result_ttl, depends_on, created_at, updated_at, started_at, "
    "finished_at, lease_token, lease_expires_at, worker_id, error, seq, headers, limits, held, rate_reserved, "
    # Task.waiting: the dependencies not ended yet are the edges left (omniq_sqlite.dependencies); the column
    # itself only says "waiting" (it leaves the claim index), so an end does not rewrite the dependant's row.
    f"CASE WHEN waiting = 0 THEN 0 ELSE (SELECT count(*) FROM {DEPENDENCIES} AS e WHERE e.dependant_id = id) END "
    "AS waiting"
)

_INSERT_COLUMNS = (
    "id, func, payload, queue, priority, unique_key, status, eta, ready_at, interval, cron, paused, attempts, "
    "max_retries, timeout, expires_at, result_ttl, depends_on, created_at, updated_at, started_at, finished_at, "
    "lease_token, lease_expires_at, worker_id, error, headers, limits, limit_key, limit_concurrency"
)
#: a new task, parameters as records.task_params (``waiting`` is the column default, 0).
INSERT_TASK = f"INSERT OR IGNORE INTO {TASKS} ({_INSERT_COLUMNS}) VALUES {placeholders(30)}"
#: a dependant: INSERT_TASK's parameters, then the ``waiting`` its enqueue counted (omniq_sqlite.dependencies).
INSERT_WAITING_TASK = f"INSERT OR IGNORE INTO {TASKS} ({_INSERT_COLUMNS}, waiting) VALUES {placeholders(31)}"
SELECT_ID_BY_UNIQUE_KEY = f"SELECT id FROM {TASKS} WHERE unique_key = ? AND status IN ('pending', 'running')"
SELECT_TASK = f"SELECT {TASK_COLUMNS} FROM {TASKS} WHERE id = ?"
#: a lease, the key of the slot it holds (NULL without a concurrency limit: no wake-up to do), and whether
#: some task waits on it (0: its end has no dependant to release).
SELECT_LEASES = (
    "SELECT id, lease_token, created_at, CASE WHEN limit_concurrency IS NOT NULL THEN limit_key END, dependants "
    f"FROM {TASKS} WHERE status = 'running' AND id IN "
)
EXTEND_LEASE = (
    f"UPDATE {TASKS} SET lease_expires_at = ?, updated_at = ? WHERE id = ? AND lease_token = ? AND status = 'running'"
)
FINISH_TERMINAL = (
    f"UPDATE {TASKS} SET status = ?, error = ?, finished_at = ?, updated_at = ?, "
    "lease_token = NULL, lease_expires_at = NULL WHERE id = ?"
)
FINISH_REQUEUE = (
    f"UPDATE {TASKS} SET status = 'pending', error = ?, eta = ?, ready_at = ?, updated_at = ?, "
    "attempts = CASE ? WHEN 'release' THEN max(attempts - 1, 0) WHEN 'reschedule' THEN 0 ELSE attempts END, "
    "lease_token = NULL, lease_expires_at = NULL WHERE id = ?"
)
#: a release hands the task back unrun: also forgets who held it and when it started.
FINISH_RELEASE = (
    f"UPDATE {TASKS} SET status = 'pending', error = ?, eta = ?, ready_at = ?, updated_at = ?, "
    "attempts = max(attempts - 1, 0), lease_token = NULL, lease_expires_at = NULL, started_at = NULL, "
    "worker_id = NULL WHERE id = ?"
)
UPSERT_RESULT = f"INSERT OR REPLACE INTO {RESULTS} (task_id, data, expires_at) VALUES (?, ?, ?)"
SELECT_RESULT = f"SELECT data, expires_at FROM {RESULTS} WHERE task_id = ?"
SELECT_RESULTS_IN = f"SELECT task_id, data, expires_at FROM {RESULTS} WHERE task_id IN ({{marks}})"
DELETE_RESULT = f"DELETE FROM {RESULTS} WHERE task_id = ?"
PURGE_RESULTS_EXPIRED = f"DELETE FROM {RESULTS} WHERE expires_at IS NOT NULL AND expires_at <= ?"
PURGE_RESULTS_ALL = f"DELETE FROM {RESULTS}"
CANCEL_TASK = (
    f"UPDATE {TASKS} SET status = 'cancelled', finished_at = ?, updated_at = ?, lease_token = NULL, "
    "lease_expires_at = NULL WHERE id = ? AND status IN ('pending', 'running')"
)
SET_PAUSED = f"UPDATE {TASKS} SET paused = ?, updated_at = ? WHERE id = ? AND status IN ('pending', 'running')"
SELECT_EXPIRED_LEASES = f"SELECT {TASK_COLUMNS} FROM {TASKS} WHERE status = 'running' AND lease_expires_at < ?"
RECOVER_REQUEUE = (
    f"UPDATE {TASKS} SET status = 'pending', eta = ?, ready_at = ?, updated_at = ?, lease_token = NULL, "
    "lease_expires_at = NULL WHERE id = ? AND lease_token = ?"
)
#: returns whether some task waits on the failed one (its dependants are released in the same transaction).
RECOVER_FAIL = (
    f"UPDATE {TASKS} SET status = 'failed', error = ?, finished_at = ?, updated_at = ?, lease_token = NULL, "
    "lease_expires_at = NULL WHERE id = ? AND lease_token = ? RETURNING dependants"
)
INSERT_EVENT = (
    f"INSERT INTO {EVENTS} (task_id, type, timestamp, queue, func, attempt, worker_id, message) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
EVENT_COLUMNS = "task_id, type, timestamp, queue, func, attempt, worker_id, message"


def claimed_queues(queue_count: int) -> str:
    """A claim's conditions on a pending row and its queue (parameters: the queues, twice); flow.py's too.

    ``paused = 0 AND waiting = 0`` restate the claim index's condition (``INDEXED BY`` needs it); paused
    queues: one uncorrelated lookup of the listed queues, once per statement.
    """
    marks = placeholders(queue_count)
    one = f"NOT EXISTS (SELECT 1 FROM {PAUSED_QUEUES} WHERE queue = ?)"
    not_paused = one if queue_count == 1 else f"queue NOT IN (SELECT queue FROM {PAUSED_QUEUES} WHERE queue IN {marks})"
    return f"paused = 0 AND waiting = 0 AND queue IN {marks} AND {not_paused}"


@functools.lru_cache(maxsize=64)
def claim_sql(queue_count: int) -> str:
    """The one-statement batch claim for ``queue_count`` queues.

    Parameters: :func:`claim_params` (plain ``?`` markers bind by position the same way on
    every Python, where a numbered ``?NNN`` marker is taken for a named one, with a
    DeprecationWarning, by early CPython 3.12 releases: python/cpython#117995).
    Lease tokens are drawn per row inside SQLite, so each claimed task gets its own.

    A row with limits comes back as it was, still PENDING (each SET is a ``CASE`` on
    ``limits IS NULL``): the claim job admits it or parks it (:mod:`omniq_sqlite.flow`).
    The conditions on queues are :func:`claimed_queues`'. A held task (``held = 1``) is not
    in the claim index; its eta is looked up in its own index (see ``_V5``).
    """
    in_queues = claimed_queues(queue_count)
    ready = (
        f"SELECT seq, priority, ready_at AS due FROM {TASKS} INDEXED BY {IDX_TASKS_CLAIM} "
        f"WHERE status = 'pending' AND held = 0 AND ready_at <= ? AND {in_queues} "
        "ORDER BY priority DESC, ready_at, seq LIMIT ?"
    )
    held_due = (
        f"SELECT seq, priority, eta AS due FROM {TASKS} INDEXED BY {IDX_TASKS_HELD_DUE} "
        f"WHERE held = 1 AND status = 'pending' AND eta <= ? AND {in_queues} ORDER BY eta LIMIT ?"
    )
    return (
        f"UPDATE {TASKS} SET status = CASE WHEN limits IS NULL THEN 'running' ELSE status END, "
        "attempts = attempts + (limits IS NULL), "
        "lease_token = CASE WHEN limits IS NULL THEN lower(hex(randomblob(12))) END, "
        "lease_expires_at = CASE WHEN limits IS NULL THEN ? END, "
        "started_at = CASE WHEN limits IS NULL THEN ? ELSE started_at END, updated_at = ?, "
        "worker_id = CASE WHEN limits IS NULL THEN ? ELSE worker_id END "
        f"WHERE seq IN (SELECT seq FROM (SELECT * FROM ({ready}) UNION ALL SELECT * FROM ({held_due})) "
        "ORDER BY priority DESC, due, seq LIMIT ?) "
        f"RETURNING {TASK_COLUMNS}"
    )


def claim_params(
    queues: tuple[str, ...], now: float, lease: float, worker_id: str, limit: int
) -> tuple[str | float | int, ...]:
    """:func:`claim_sql`'s parameters: the lease's, then each branch's (now, queues twice, limit), then the limit."""
    return (now + lease, now, now, worker_id, now, *queues, *queues, limit, now, *queues, *queues, limit, limit)


@functools.lru_cache(maxsize=64)
def next_ready_sql(queue_count: int) -> str:
    """Earliest ``ready_at`` among claimable tasks of ``queue_count`` queues (held ones: their eta), for wait_for_work.

    Paused queues are left out (:func:`claimed_queues`). Parameters: the queues, four times.
    """
    in_queues = claimed_queues(queue_count)
    return (
        f"SELECT min(due) FROM (SELECT min(ready_at) AS due FROM {TASKS} INDEXED BY {IDX_TASKS_CLAIM} "
        f"WHERE status = 'pending' AND held = 0 AND {in_queues} UNION ALL SELECT min(eta) FROM {TASKS} "
        f"INDEXED BY {IDX_TASKS_HELD_DUE} WHERE held = 1 AND status = 'pending' AND {in_queues})"
    )
