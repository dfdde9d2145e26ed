"""The task queue's statements and the result upsert, rendered once per schema, and how bulk parameters travel.

Every hot-path statement is a single round trip for a whole batch: arrays go
in through ``unnest`` and asyncpg prepares and caches each statement. The
enqueue INSERT lives with the enqueue path (:mod:`omniq_postgres.enqueue`),
the storages' one-line reads and deletes in their classes.

**Batch parameters** (:class:`BatchColumns`): a column whose value is the same
on every row goes in as one scalar. Arrays are costly at both ends: asyncpg
encodes every element and the server decodes every element again before the
statement runs. In a typical batch most columns hold one value on every row
(one function, one queue, the same options, NULL for the unset ones), so an
``enqueue_many`` with shared options sends 2 or 3 arrays (id, created_at,
payload when the arguments differ) instead of 18, which halves the
statement's time. A text array (the ids of a bulk enqueue, the task ids of an
event batch) goes in as one string joined by a separator the server splits on
(``string_to_array``) whenever that splits back into exactly the values:
asyncpg encodes a text[] element by element in Python (~4 ms per 10k ids,
measured), while a join is one C call and ``string_to_array`` is cheaper for
the server than decoding the array. Each combination of scalar, array and
packed columns is its own statement text, built once and cached (asyncpg
prepares each text once per connection); real workloads use a handful.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from omniq.models import TaskStatus
from omniq_postgres.dependencies import released
from omniq_postgres.flow import CLAIM_FLOW_FN, FLOW_KEYS_TABLE, HANDOVER_SETTING, PAUSED_TABLE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from omniq_postgres.schema import Names

__all__ = [
    "ACTIVE",
    "ARRAY",
    "PACKED",
    "RESULT_COLUMNS",
    "SCALAR",
    "TASK_COLUMNS",
    "BatchColumns",
    "TaskSQL",
    "status_filter",
    "upsert_results",
    "uniform_mask",
]

# -- batch parameters -----------------------------------------------------------------------------

#: rendered statements kept per column list.
_MAX_CACHED = 256

#: how a column travels: one value for every row, an array, or a text array packed into one string.
SCALAR, ARRAY, PACKED = 0, 1, 2
#: the packed separator (ASCII unit separator): a value containing it is sent as a plain array.
_SEP = "\x1f"


def uniform_mask(columns: Sequence[list[Any]], *, vary_first: bool) -> tuple[bool, ...]:
    """One flag per column: True when it must go in as an array (its values differ).

    Args:
        columns: the column value lists, all of one length.
        vary_first: keep the first column an array whenever there are
            several rows, so the ``unnest`` has a row source (the key column).
    """
    rows = len(columns[0])
    if rows <= 1:
        return (False,) * len(columns)
    # list.count compares by identity first, so a column of one shared object is a cheap C loop.
    checked = columns[1:] if vary_first else columns
    mask = tuple(column.count(column[0]) != rows for column in checked)
    return (True, *mask) if vary_first else mask


class BatchColumns:
    """Renders and caches the statement for each scalar/array combination of a column list.

    Args:
        columns: ``(name, PostgreSQL type)`` of each parameter, in parameter order.
        render: ``render(values, unnest)`` returns the statement, where
            ``values[name]`` is the SQL expression of that column's value on
            a row (``$3::text`` or ``i.func``; an array column's whole array is
            ``values[name + "[]"]``) and ``unnest`` is the FROM item
            (``unnest(...) WITH ORDINALITY AS i(..., ord)``) or None when every
            column is a scalar (a single row).
    """

    def __init__(self, columns: Sequence[tuple[str, str]], render: Callable[[dict[str, str], str | None], str]) -> None:
        self.columns = tuple(columns)
        self._render = render
        self._cache: dict[tuple[int, ...], str] = {}

    def sql(self, kinds: tuple[int, ...]) -> str:
        """The statement where ``kinds[k]`` says how column k travels (SCALAR, ARRAY or PACKED).

        A mask of bools (True: an array) works too.
        """
        sql = self._cache.get(kinds)
        if sql is None:
            if len(self._cache) >= _MAX_CACHED:  # a bound, not an LRU: real workloads use a handful
                self._cache.clear()
            sql = self._cache[kinds] = self._build(kinds)
        return sql

    def bind(self, columns: Sequence[list[Any]], mask: tuple[bool, ...]) -> tuple[str, list[Any]]:
        """The statement and its parameters, text arrays packed where they split back exactly.

        Args:
            columns: the column value lists, all of one length.
            mask: from :func:`uniform_mask` (True: the column's values differ).
        """
        kinds: list[int] = []
        args: list[Any] = []
        for (_, pg_type), column, is_array in zip(self.columns, columns, mask, strict=True):
            if not is_array:
                kinds.append(SCALAR)
                args.append(column[0])
            elif pg_type == "text" and (packed := _packed(column)) is not None:
                kinds.append(PACKED)
                args.append(packed)
            else:
                kinds.append(ARRAY)
                args.append(column)
        return self.sql(tuple(kinds)), args

    def _build(self, kinds: tuple[int, ...]) -> str:
        values: dict[str, str] = {}
        arrays: list[str] = []
        names: list[str] = []
        for number, ((name, pg_type), kind) in enumerate(zip(self.columns, kinds, strict=True), 1):
            if kind == SCALAR:
                values[name] = f"${number}::{pg_type}"
                continue
            array = f"string_to_array(${number}::text, E'\\x1f')" if kind == PACKED else f"${number}::{pg_type}[]"
            arrays.append(array)
            names.append(name)
            values[name] = f"i.{name}"
            values[f"{name}[]"] = array  # the whole column, for a statement that needs it apart
        unnest = None
        if arrays:
            unnest = f"unnest({', '.join(arrays)}) WITH ORDINALITY AS i({', '.join(names)}, ord)"
        return self._render(values, unnest)


def _packed(values: list[Any]) -> str | None:
    """The values joined by the separator, or None when they would not split back into themselves."""
    try:
        joined = _SEP.join(values)
    except TypeError:  # a NULL (None) among them: string_to_array has no way to say it
        return None
    return joined if joined.count(_SEP) == len(values) - 1 else None


# -- the task queue's statements ---------------------------------------------------------------

#: columns read back into a :class:`omniq.models.Task`, in this order.
TASK_COLUMNS = (
    "id, seq, func, payload, queue, priority, unique_key, status, eta, ready_at, interval_seconds, cron, paused, "
    "attempts, max_retries, timeout, expires_at, result_ttl, depends_on, created_at, updated_at, started_at, "
    "finished_at, lease_token, lease_expires_at, worker_id, error, headers, limit_key, limit_concurrency, limit_rate, "
    "limit_burst, held, rate_reserved, waiting"
)

_T_COLUMNS = ", ".join(f"t.{name.strip()}" for name in TASK_COLUMNS.split(","))
_U_COLUMNS = ", ".join(f"u.{name.strip()}" for name in TASK_COLUMNS.split(","))

#: the statuses of a task that is not finished (holds its unique key).
ACTIVE = "('pending', 'running')"
#: an ended row, among the rows an ending statement returns (omniq_postgres.dependencies.released).
_ENDED = f"status NOT IN {ACTIVE}"


def status_filter(statuses: Sequence[str]) -> str:
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
        # One index walk per queue (tasks_claim_idx gives the order, so the cost
        # is O(limit), not O(backlog)), merged and cut to the limit. With several
        # queues, up to limit rows per queue are locked for the statement's few ms.
        # Paused queues are left out first (an anti-join with their small table). Flow
        # control (omniq_postgres.flow): the probe f looks for a ready limited row in the
        # queues (a partial index that holds limited rows only, so it is empty without
        # limits); without one the plain UPDATE claims unlimited rows, with one claim_flow()
        # claims every row instead, in the same statement.
        paused = f"{names.q_schema}.{PAUSED_TABLE}"
        active = f"SELECT u.queue FROM unnest($1::text[]) AS u(queue) WHERE u.queue NOT IN (SELECT queue FROM {paused})"
        self.claim = f"""
            WITH q AS MATERIALIZED ({active}),
                 f AS MATERIALIZED (
                     SELECT EXISTS (SELECT 1 FROM q, LATERAL (SELECT 1 FROM {tasks}
                                                              WHERE queue = q.queue AND status = 'pending'
                                                                AND limit_key IS NOT NULL AND NOT paused
                                                                AND ready_at <= now()
                                                              LIMIT 1) AS l) AS limited),
                 plain AS (
                     UPDATE {tasks} AS t
                        SET status = 'running', attempts = t.attempts + 1, lease_token = gen_random_uuid()::text,
                            lease_expires_at = now() + $3::float8 * interval '1 second', started_at = now(),
                            updated_at = now(), worker_id = $4
                       FROM (SELECT c.id
                               FROM q,
                                    LATERAL (SELECT id, priority, ready_at, seq FROM {tasks}
                                              WHERE hashtext(queue) = hashtext(q.queue) AND queue = q.queue
                                                AND status = 'pending' AND NOT paused AND ready_at <= now()
                                                AND limit_key IS NULL
                                              ORDER BY priority DESC, ready_at, seq
                                              LIMIT $2
                                                FOR UPDATE SKIP LOCKED) AS c
                              WHERE NOT (SELECT limited FROM f)
                              ORDER BY c.priority DESC, c.ready_at, c.seq
                              LIMIT $2) AS c
                      WHERE t.id = c.id
                     RETURNING {_T_COLUMNS})
            SELECT * FROM plain
            UNION ALL
            SELECT {TASK_COLUMNS}
              FROM {names.q_schema}.{CLAIM_FLOW_FN}((SELECT array_agg(queue) FROM q), $2::int4, $3::float8, $4)
             WHERE (SELECT limited FROM f)"""
        # Seconds (database clock) until the earliest pending task of the queues is due. A loose
        # index scan of tasks_claim_idx: per queue, the first entry of each priority holds that
        # priority's earliest ready_at, so the cost is O(distinct priorities), not O(backlog).
        # A priority whose tasks all wait for dependencies starts at infinity: not a due time
        # (their last dependency's end NOTIFYs).
        claimable = "status = 'pending' AND NOT paused"
        self.next_due = f"""
            WITH RECURSIVE p AS (
                SELECT q.queue, f.priority, f.ready_at
                  FROM ({active}) AS q(queue),
                       LATERAL (SELECT priority, ready_at FROM {tasks}
                                 WHERE hashtext(queue) = hashtext(q.queue) AND queue = q.queue AND {claimable}
                                 ORDER BY priority DESC, ready_at, seq LIMIT 1) AS f
                UNION ALL
                SELECT p.queue, n.priority, n.ready_at
                  FROM p, LATERAL (SELECT priority, ready_at FROM {tasks}
                                    WHERE hashtext(queue) = hashtext(p.queue) AND queue = p.queue AND {claimable}
                                          AND priority < p.priority
                                    ORDER BY priority DESC, ready_at, seq LIMIT 1) AS n)
            SELECT extract(epoch FROM min(ready_at) FILTER (WHERE ready_at < 'infinity') - now())::float8 FROM p"""
        self.extend = f"""
            UPDATE {tasks} AS t
               SET lease_expires_at = now() + $3::float8 * interval '1 second', updated_at = now()
              FROM unnest($1::text[], $2::text[]) AS l(id, token)
             WHERE t.id = l.id AND t.lease_token = l.token AND t.status = 'running'
            RETURNING t.id"""

        def outcomes(where: str = "") -> str:  # the outcomes (o) and their rows changed (upd)
            return f"""
            o AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
                                WITH ORDINALITY AS o(id, token, kind, status, eta, error, ord) {where}),
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
                RETURNING o.ord, o.id, o.status, t.has_dependants,
                          CASE WHEN t.limit_concurrency IS NOT NULL THEN t.limit_key END AS slot)"""

        # Terminal outcomes release the tasks waiting on them in the same statement (.dependencies).
        self._released = partial(released, names)
        #: the finish's answer: each accepted outcome's number and the limit key of the slot it freed.
        self.finished_rows = f"SELECT upd.ord, upd.slot FROM upd, {self._released('upd', _ENDED)}"
        self.finish = f"WITH {outcomes()} {self.finished_rows}"
        self._finish_fused_head = f"WITH {outcomes()},"
        handing_over = f"WHERE set_config('{HANDOVER_SETTING}', 'on', true) = 'on'"  # before a row changes: .finishing
        self.handover_head = f"WITH {outcomes(handing_over)},"
        # Each sweep also drops the rate state of keys idle for a while (a tat in the past is the
        # same as none), skipping rows a claim is updating.
        flow_keys = f"{names.q_schema}.{FLOW_KEYS_TABLE}"
        self.recover_select = f"""
            WITH stale AS (DELETE FROM {flow_keys}
                            WHERE key IN (SELECT key FROM {flow_keys} WHERE tat < extract(epoch FROM now()) - 1
                                            FOR UPDATE SKIP LOCKED))
            SELECT {TASK_COLUMNS} FROM {tasks}
             WHERE status = 'running' AND lease_expires_at < now()
             ORDER BY lease_expires_at
             LIMIT $1
               FOR UPDATE SKIP LOCKED"""
        self.recover_update = f"""
            WITH u AS (
                UPDATE {tasks} AS t
                   SET status = r.status, lease_token = NULL, lease_expires_at = NULL, updated_at = now(),
                       eta = CASE WHEN r.status = 'pending' THEN now() ELSE t.eta END,
                       ready_at = CASE WHEN r.status = 'pending' THEN now() ELSE t.ready_at END,
                       finished_at = CASE WHEN r.status = 'pending' THEN t.finished_at ELSE now() END,
                       error = coalesce(r.error::jsonb, t.error)
                  FROM unnest($1::text[], $2::text[], $3::text[]) AS r(id, status, error)
                 WHERE t.id = r.id
                RETURNING {_T_COLUMNS}, t.has_dependants)
            SELECT {_U_COLUMNS} FROM u, {self._released("u", _ENDED)}"""
        self.get = f"SELECT {TASK_COLUMNS} FROM {tasks} WHERE id = $1"
        self.get_many = f"SELECT {TASK_COLUMNS} FROM {tasks} WHERE id = ANY($1::text[])"
        self.cancel = f"""
            WITH c AS (
                UPDATE {tasks}
                   SET status = 'cancelled', lease_token = NULL, lease_expires_at = NULL,
                       finished_at = now(), updated_at = now()
                 WHERE id = $1 AND status IN {ACTIVE}
                RETURNING id, has_dependants)
            SELECT c.id FROM c, {self._released("c", "true")}"""
        self.set_paused = f"""
            UPDATE {tasks} SET paused = $2, updated_at = now()
             WHERE id = $1 AND status IN {ACTIVE}
            RETURNING id"""
        self._tasks = tasks

    def finish_fused(self, results_table: str) -> str:
        """The finish statement that also upserts accepted results into ``results_table``."""
        upsert = upsert_results(results_table, 7, accepted="upd")
        return f"{self._finish_fused_head} res AS ({upsert} RETURNING 1) {self.finished_rows}"

    def purge(self, statuses: Sequence[str] | None, queue: str | None) -> tuple[str, list[object]]:
        """The purge's DELETE (see :meth:`filtered`) and its count; deleting a task releases its dependants.

        Only the ids of flagged tasks that had not ended come back from the DELETE (NULL for the others).
        """
        sql, args = self.filtered("DELETE FROM {tasks}", statuses, queue)
        gone = f"CASE WHEN has_dependants AND status IN {ACTIVE} THEN id END"
        deleted = f"WITH d AS ({sql} RETURNING {gone} AS id, {gone} IS NOT NULL AS has_dependants)"
        return f"{deleted} SELECT count(*) FROM d, {self._released('d', 'true')}", args

    def filtered(self, head: str, statuses: Sequence[str] | None, queue: str | None) -> tuple[str, list[object]]:
        """``head`` (``SELECT ... FROM {tasks}`` / ``DELETE FROM {tasks}``) with optional status/queue filters."""
        clauses: list[str] = []
        args: list[object] = []
        if statuses is not None:
            clauses.append(status_filter(statuses))
        if queue is not None:
            args.append(queue)
            clauses.append(
                f"hashtext(queue) = hashtext(${len(args)}) AND queue = ${len(args)}"
            )  # the claim index's key
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return f"{head.format(tasks=self._tasks)}{where}", args


# -- results --------------------------------------------------------------------------------------

#: the results table's columns, in the order of :func:`omniq_postgres.records.result_arrays`.
RESULT_COLUMNS = "task_id, status, payload, error, attempts, func, queue, started_at, finished_at, expires_at"
_RESULT_TYPES = ("text", "text", "bytea", "text", "int4", "text", "text", "timestamptz", "timestamptz", "timestamptz")


def upsert_results(table: str, first: int = 1, *, accepted: str | None = None) -> str:
    """INSERT results from one array parameter per column, ``$first`` on; a stored result is replaced.

    Args:
        table: the results table.
        first: the number of the first array parameter.
        accepted: the name of a CTE of accepted outcomes (``ord``): the arrays then start with
            each result's outcome number, and only results of accepted outcomes are written.
    """
    columns = RESULT_COLUMNS.split(", ")
    names, types = (["ord", *columns], ("int8", *_RESULT_TYPES)) if accepted else (columns, _RESULT_TYPES)
    arrays = ", ".join(f"${number}::{pg_type}[]" for number, pg_type in enumerate(types, first))
    values = ", ".join("r.error::jsonb" if column == "error" else f"r.{column}" for column in columns)
    join = f" JOIN {accepted} ON {accepted}.ord = r.ord" if accepted else ""
    replace = ", ".join(f"{column} = EXCLUDED.{column}" for column in columns[1:])
    return f"""
        INSERT INTO {table} ({RESULT_COLUMNS})
        SELECT {values}
          FROM unnest({arrays}) AS r({", ".join(names)}){join}
        ON CONFLICT (task_id) DO UPDATE SET {replace}"""
