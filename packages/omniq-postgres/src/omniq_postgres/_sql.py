"""The task queue's DML, one statement per operation, rendered once per schema.

Every hot-path statement is a single round trip for a whole batch: arrays
go in through ``unnest`` and asyncpg prepares and caches each statement. The
enqueue INSERT sends a column that is the same on every row as one scalar
(:mod:`omniq_postgres._batch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.models import TaskStatus
from omniq_postgres._batch import BatchColumns
from omniq_postgres.schema import SEQ_BLOCK

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq_postgres.schema import Names

__all__ = ["INSERT_COLUMNS", "SEQ_BLOCK", "TASK_COLUMNS", "TaskSQL"]

#: columns read back into a :class:`omniq.models.Task`, in this order.
TASK_COLUMNS = (
    "id, seq, func, payload, queue, priority, unique_key, status, eta, ready_at, interval_seconds, cron, paused, "
    "attempts, max_retries, timeout, expires_at, result_ttl, depends_on, created_at, updated_at, started_at, "
    "finished_at, lease_token, lease_expires_at, worker_id, error"
)

_T_COLUMNS = ", ".join(f"t.{name.strip()}" for name in TASK_COLUMNS.split(","))

_ACTIVE = "('pending', 'running')"

#: the parameters of the enqueue INSERT, in order: (column, PostgreSQL type). JSON columns go in as text.
INSERT_COLUMNS = (
    ("id", "text"),
    ("func", "text"),
    ("payload", "bytea"),
    ("queue", "text"),
    ("priority", "int4"),
    ("unique_key", "text"),
    ("paused", "bool"),
    ("eta", "timestamptz"),
    ("interval_seconds", "float8"),
    ("cron", "text"),
    ("attempts", "int4"),
    ("max_retries", "int4"),
    ("timeout", "float8"),
    ("expires_at", "timestamptz"),
    ("result_ttl", "float8"),
    ("depends_on", "text"),
    ("created_at", "timestamptz"),
    ("error", "text"),
)


def _render_insert(
    names: Names, v: dict[str, str], unnest: str | None, *, skipping: bool = False, seq_block: bool = True
) -> str:
    """The enqueue statement for one scalar/array combination (see :mod:`omniq_postgres._batch`).

    A task without eta is ready at once and sorts by its creation time;
    ``least(..., now())`` keeps a client clock that runs ahead from delaying it.

    Enqueue order (``seq``) costs one nextval per statement, not per row: the statement takes
    one value and numbers its rows from it, inside the block of ``SEQ_BLOCK`` values that the
    identity's increment leaves free after each value, so rows given a default (a per-row nextval)
    still sort after them.

    The statement also NOTIFYs each queue it wrote to, delivered on commit (of the caller's
    transaction too), instead of an insert trigger collecting every new row to find them.
    ``skipping`` leaves out rows whose id or unique key is taken and returns the ids it inserted.
    """
    tasks = names.tasks
    seq_column, overriding, seq_value, sources = "", "", "", []
    if seq_block:
        sequence = f"pg_get_serial_sequence('{tasks}', 'seq')"
        sources.append(f"(SELECT nextval({sequence}) AS base) AS s")
        seq_column, overriding = "seq, ", " OVERRIDING SYSTEM VALUE"
        seq_value = "s.base + i.ord - 1, " if unnest else "s.base, "
    if unnest:
        sources.append(unnest)
    source = f" FROM {', '.join(sources)}" if sources else ""
    insert = f"""
            INSERT INTO {tasks} ({seq_column}id, func, payload, queue, priority, unique_key, status, paused, eta,
                                 ready_at, interval_seconds, cron, attempts, max_retries, timeout, expires_at,
                                 result_ttl, depends_on, created_at, updated_at, error){overriding}
            SELECT {seq_value}{v["id"]}, {v["func"]}, {v["payload"]}, {v["queue"]}, {v["priority"]},
                   {v["unique_key"]}, 'pending', {v["paused"]}, {v["eta"]},
                   coalesce({v["eta"]}, least({v["created_at"]}, now())),
                   {v["interval_seconds"]}, {v["cron"]}, {v["attempts"]}, {v["max_retries"]}, {v["timeout"]},
                   {v["expires_at"]}, {v["result_ttl"]}, {v["depends_on"]}::jsonb, {v["created_at"]}, now(),
                   {v["error"]}::jsonb{source}{" ORDER BY i.ord" if unnest and not seq_block else ""}"""
    channel = "'" + names.tasks_channel.replace("'", "''") + "'"
    if v["queue"].startswith("i."):  # one queue per row: notify each distinct one
        notify = f"SELECT count(pg_notify({channel}, q)) FROM (SELECT DISTINCT unnest({v['queue[]']})) AS d(q)"
    else:
        notify = f"SELECT pg_notify({channel}, {v['queue']})"
    if not skipping:
        return f"WITH ins AS ({insert}) {notify}"
    return f"""WITH ins AS ({insert}
            ON CONFLICT DO NOTHING
            RETURNING id)
            SELECT (SELECT array_agg(id) FROM ins), ({notify})"""


def _status_filter(statuses: Sequence[str]) -> str:
    """A status condition the planner can match to the partial indexes.

    Pending tasks are in the claim index only, the others in the status index; an index
    predicate is matched only against constants, so the statuses (enum values, never user
    text) are written into the statement, pending as its own arm of an OR.
    """
    known = {status.value for status in TaskStatus}
    wanted = sorted(set(statuses))
    if not set(wanted) <= known:
        raise ValueError(f"unknown task status in {wanted!r}")
    arms = []
    if "pending" in wanted:
        arms.append("status = 'pending'")
    others = [status for status in wanted if status != "pending"]
    if others:
        arms.append("status IN (" + ", ".join(f"'{status}'" for status in others) + ")")
    if not arms:
        return "false"
    return arms[0] if len(arms) == 1 else f"({' OR '.join(arms)})"


class TaskSQL:
    """Statements of :class:`~omniq_postgres.task_queue.PostgresTaskQueue` for one schema."""

    def __init__(self, names: Names) -> None:
        tasks = names.tasks
        # Plain: every row must be new (a collision fails the whole statement). Skipping: rows whose
        # id or unique key is taken are left out, and RETURNING tells which went in.
        self.insert = BatchColumns(INSERT_COLUMNS, lambda values, unnest: _render_insert(names, values, unnest))
        self.insert_skipping = BatchColumns(
            INSERT_COLUMNS, lambda values, unnest: _render_insert(names, values, unnest, skipping=True)
        )
        # Batches past one seq block: one nextval per row (the column's default).
        self.insert_large = BatchColumns(
            INSERT_COLUMNS, lambda values, unnest: _render_insert(names, values, unnest, seq_block=False)
        )
        self.insert_skipping_large = BatchColumns(
            INSERT_COLUMNS,
            lambda values, unnest: _render_insert(names, values, unnest, skipping=True, seq_block=False),
        )
        # Who already holds a unique key, or an id, that an INSERT above skipped.
        self.delete_finished = f"DELETE FROM {tasks} WHERE id = ANY($1::text[]) AND status NOT IN {_ACTIVE}"
        self.existing = f"""
            SELECT id, unique_key, status IN {_ACTIVE} AS active FROM {tasks}
             WHERE id = ANY($1::text[]) OR (unique_key = ANY($2::text[]) AND status IN {_ACTIVE})"""
        # One index walk per queue (tasks_claim_idx gives the order, so the cost
        # is O(limit), not O(backlog)), merged and cut to the limit. With several
        # queues, up to limit rows per queue are locked for the statement's few ms.
        self.claim = f"""
            UPDATE {tasks} AS t
               SET status = 'running', attempts = t.attempts + 1, lease_token = gen_random_uuid()::text,
                   lease_expires_at = now() + $3::float8 * interval '1 second', started_at = now(),
                   updated_at = now(), worker_id = $4
              FROM (SELECT c.id
                      FROM unnest($1::text[]) AS q(queue),
                           LATERAL (SELECT id, priority, ready_at, seq FROM {tasks}
                                     WHERE hashtext(queue) = hashtext(q.queue) AND queue = q.queue
                                       AND status = 'pending' AND NOT paused AND ready_at <= now()
                                     ORDER BY priority DESC, ready_at, seq
                                     LIMIT $2
                                       FOR UPDATE SKIP LOCKED) AS c
                     ORDER BY c.priority DESC, c.ready_at, c.seq
                     LIMIT $2) AS c
             WHERE t.id = c.id
            RETURNING {_T_COLUMNS}"""
        # Seconds (database clock) until the earliest pending task of the queues is due. A loose
        # index scan of tasks_claim_idx: per queue, the first entry of each priority holds that
        # priority's earliest ready_at, so the cost is O(distinct priorities), not O(backlog).
        claimable = "status = 'pending' AND NOT paused"
        self.next_due = f"""
            WITH RECURSIVE p AS (
                SELECT q.queue, f.priority, f.ready_at
                  FROM unnest($1::text[]) AS q(queue),
                       LATERAL (SELECT priority, ready_at FROM {tasks}
                                 WHERE hashtext(queue) = hashtext(q.queue) AND queue = q.queue AND {claimable}
                                 ORDER BY priority DESC, ready_at, seq LIMIT 1) AS f
                UNION ALL
                SELECT p.queue, n.priority, n.ready_at
                  FROM p, LATERAL (SELECT priority, ready_at FROM {tasks}
                                    WHERE hashtext(queue) = hashtext(p.queue) AND queue = p.queue AND {claimable}
                                          AND priority < p.priority
                                    ORDER BY priority DESC, ready_at, seq LIMIT 1) AS n)
            SELECT extract(epoch FROM min(ready_at) - now())::float8 FROM p"""
        self.extend = f"""
            UPDATE {tasks} AS t
               SET lease_expires_at = now() + $3::float8 * interval '1 second', updated_at = now()
              FROM unnest($1::text[], $2::text[]) AS l(id, token)
             WHERE t.id = l.id AND t.lease_token = l.token AND t.status = 'running'
            RETURNING t.id"""
        outcomes = f"""
            o AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
                                WITH ORDINALITY AS o(id, token, kind, status, eta, error, ord)),
            upd AS (
                UPDATE {tasks} AS t
                   SET status = o.status,
                       attempts = CASE o.kind WHEN 'release' THEN greatest(t.attempts - 1, 0)
                                              WHEN 'reschedule' THEN 0 ELSE t.attempts END,
                       eta = CASE WHEN o.status = 'pending' THEN o.eta ELSE t.eta END,
                       ready_at = CASE WHEN o.status = 'pending' THEN coalesce(o.eta, least(t.created_at, now()))
                                       ELSE t.ready_at END,
                       finished_at = CASE WHEN o.status = 'pending' THEN t.finished_at ELSE now() END,
                       started_at = CASE o.kind WHEN 'release' THEN NULL ELSE t.started_at END,
                       worker_id = CASE o.kind WHEN 'release' THEN NULL ELSE t.worker_id END,
                       error = o.error::jsonb, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
                  FROM o
                 WHERE t.id = o.id AND t.lease_token = o.token AND t.status = 'running'
                RETURNING o.ord)"""
        self.finish = f"WITH {outcomes} SELECT ord FROM upd"
        self._finish_fused_head = f"WITH {outcomes},"
        self.recover_select = f"""
            SELECT {TASK_COLUMNS} FROM {tasks}
             WHERE status = 'running' AND lease_expires_at < now()
             ORDER BY lease_expires_at
             LIMIT $1
               FOR UPDATE SKIP LOCKED"""
        self.recover_update = f"""
            UPDATE {tasks} AS t
               SET status = r.status, lease_token = NULL, lease_expires_at = NULL, updated_at = now(),
                   eta = CASE WHEN r.status = 'pending' THEN now() ELSE t.eta END,
                   ready_at = CASE WHEN r.status = 'pending' THEN now() ELSE t.ready_at END,
                   finished_at = CASE WHEN r.status = 'pending' THEN t.finished_at ELSE now() END,
                   error = coalesce(r.error::jsonb, t.error)
              FROM unnest($1::text[], $2::text[], $3::text[]) AS r(id, status, error)
             WHERE t.id = r.id
            RETURNING {_T_COLUMNS}"""
        self.get = f"SELECT {TASK_COLUMNS} FROM {tasks} WHERE id = $1"
        self.get_many = f"SELECT {TASK_COLUMNS} FROM {tasks} WHERE id = ANY($1::text[])"
        self.cancel = f"""
            UPDATE {tasks}
               SET status = 'cancelled', lease_token = NULL, lease_expires_at = NULL,
                   finished_at = now(), updated_at = now()
             WHERE id = $1 AND status IN {_ACTIVE}
            RETURNING id"""
        self.set_paused = f"""
            UPDATE {tasks} SET paused = $2, updated_at = now()
             WHERE id = $1 AND status IN {_ACTIVE}
            RETURNING id"""
        self._tasks = tasks

    def finish_fused(self, results_table: str) -> str:
        """The finish statement that also upserts accepted results into ``results_table``."""
        return f"""{self._finish_fused_head}
            res AS (
                INSERT INTO {results_table} (task_id, status, payload, error, attempts, func, queue,
                                             started_at, finished_at, expires_at)
                SELECT r.task_id, r.status, r.payload, r.error::jsonb, r.attempts, r.func, r.queue,
                       r.started_at, r.finished_at, r.expires_at
                  FROM unnest($7::int8[], $8::text[], $9::text[], $10::bytea[], $11::text[], $12::int4[],
                              $13::text[], $14::text[], $15::timestamptz[], $16::timestamptz[], $17::timestamptz[])
                       AS r(ord, task_id, status, payload, error, attempts, func, queue, started_at,
                            finished_at, expires_at)
                  JOIN upd ON upd.ord = r.ord
                ON CONFLICT (task_id) DO UPDATE
                   SET status = EXCLUDED.status, payload = EXCLUDED.payload, error = EXCLUDED.error,
                       attempts = EXCLUDED.attempts, func = EXCLUDED.func, queue = EXCLUDED.queue,
                       started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
                       expires_at = EXCLUDED.expires_at
                RETURNING 1)
            SELECT ord FROM upd"""

    def filtered(self, head: str, statuses: Sequence[str] | None, queue: str | None) -> tuple[str, list[object]]:
        """``head`` (``SELECT ... FROM {tasks}`` / ``DELETE FROM {tasks}``) with optional status/queue filters."""
        clauses: list[str] = []
        args: list[object] = []
        if statuses is not None:
            clauses.append(_status_filter(statuses))
        if queue is not None:
            args.append(queue)
            clauses.append(
                f"hashtext(queue) = hashtext(${len(args)}) AND queue = ${len(args)}"
            )  # the claim index's key
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return f"{head.format(tasks=self._tasks)}{where}", args
