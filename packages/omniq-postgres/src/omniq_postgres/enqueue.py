"""The enqueue path: the INSERT statement, unique keys and taken ids, and the events written beside.

``enqueue_many`` is one ``INSERT ... SELECT FROM unnest``: a plain one for a
batch without unique keys outside a caller's transaction, else (or when an id
turns out to be taken) ``ON CONFLICT DO NOTHING``, plus one lookup only when
unique keys or ids collide. A batch with ``depends_on`` takes its own path
(:mod:`omniq_postgres.dependencies`): in a transaction, its dependencies
locked first and its registrations written after; every other batch runs
exactly as before.

Enqueue order (``seq``) costs one nextval per statement, and the statement
NOTIFYs the queues it wrote to (see :func:`_render_insert`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

from omniq.errors import ConfigurationError
from omniq_postgres.dependencies import DEPENDENCY_COLUMNS, WAITING_READY_AT, DependencyInserts, WaitingPlan
from omniq_postgres.records import NO_DEPENDENCIES, insert_columns, limit_columns
from omniq_postgres.schema import SEQ_BLOCK
from omniq_postgres.sql import ACTIVE, BatchColumns, uniform_mask

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.models import Task, TaskEvent
    from omniq_postgres.event_storage import PostgresEventStorage
    from omniq_postgres.schema import Names

__all__ = ["INSERT_COLUMNS", "LIMIT_COLUMNS", "TaskInserts"]

#: attempts to re-insert a task whose unique key was released between INSERT and lookup.
_UNIQUE_RETRIES = 5

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
    ("headers", "text"),
)
#: the limit columns, added after :data:`INSERT_COLUMNS` only in a batch with a limited task.
LIMIT_COLUMNS = (
    ("limit_key", "text"),
    ("limit_concurrency", "int4"),
    ("limit_rate", "float8"),
    ("limit_burst", "int4"),
)
#: the position of ``depends_on`` in :data:`INSERT_COLUMNS`.
_DEPENDS_ON = next(k for k, (name, _) in enumerate(INSERT_COLUMNS) if name == "depends_on")


def _render_insert(
    names: Names, v: dict[str, str], unnest: str | None, *, skipping: bool = False, seq_block: bool = True
) -> str:
    """The enqueue statement for one scalar/array combination (see :class:`BatchColumns`).

    A task without eta is ready at once and sorts by its creation time;
    ``least(..., now())`` keeps a client clock that runs ahead from delaying it.

    Enqueue order (``seq``) costs one nextval per statement, not per row: the statement takes
    one value and numbers its rows from it, inside the block of ``SEQ_BLOCK`` values that the
    identity's increment leaves free after each value, so rows given a default (a per-row nextval)
    still sort after them.

    The statement also NOTIFYs each queue it wrote to, delivered on commit (of the caller's
    transaction too), instead of an insert trigger collecting every new row to find them.
    ``skipping`` leaves out rows whose id or unique key is taken and returns the ids it inserted.

    A batch with dependencies also writes ``waiting`` and ``has_dependants``
    (:data:`~omniq_postgres.dependencies.DEPENDENCY_COLUMNS`): a waiting task is not ready
    (``ready_at`` at infinity) and its queue is notified only for a task that is.
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
    extra: list[tuple[str, str]] = []  # the optional columns of this batch
    if "limit_key" in v:  # a batch with limited tasks (omniq_postgres.flow); NULL for the others
        extra += LIMIT_COLUMNS
    ready_at = f"coalesce({v['eta']}, least({v['created_at']}, now()))"
    waiting = "waiting" in v  # a batch with dependencies (omniq_postgres.dependencies)
    if waiting:
        extra += DEPENDENCY_COLUMNS
        ready_at = f"CASE WHEN {v['waiting']} > 0 THEN {WAITING_READY_AT} ELSE {ready_at} END"
    extra_names = "".join(f", {name}" for name, _ in extra)
    extra_values = "".join(f", {v[name]}" for name, _ in extra)
    insert = f"""
            INSERT INTO {tasks} ({seq_column}id, func, payload, queue, priority, unique_key, status, paused, eta,
                                 ready_at, interval_seconds, cron, attempts, max_retries, timeout, expires_at,
                                 result_ttl, depends_on, created_at, updated_at, error, headers{extra_names}){overriding}
            SELECT {seq_value}{v["id"]}, {v["func"]}, {v["payload"]}, {v["queue"]}, {v["priority"]},
                   {v["unique_key"]}, 'pending', {v["paused"]}, {v["eta"]}, {ready_at},
                   {v["interval_seconds"]}, {v["cron"]}, {v["attempts"]}, {v["max_retries"]}, {v["timeout"]},
                   {v["expires_at"]}, {v["result_ttl"]}, {v["depends_on"]}::jsonb, {v["created_at"]}, now(),
                   {v["error"]}::jsonb, {v["headers"]}::jsonb{extra_values}{source}{" ORDER BY i.ord" if unnest and not seq_block else ""}"""
    channel = "'" + names.tasks_channel.replace("'", "''") + "'"
    if waiting:  # the queues of the tasks that are ready
        rows = f" FROM {unnest}" if unnest else ""
        ready = f"SELECT DISTINCT {v['queue']}{rows} WHERE {v['waiting']} = 0"
        notify = f"SELECT count(pg_notify({channel}, q)) FROM ({ready}) AS d(q)"
    elif v["queue"].startswith("i."):  # one queue per row: notify each distinct one
        notify = f"SELECT count(pg_notify({channel}, q)) FROM (SELECT DISTINCT unnest({v['queue[]']})) AS d(q)"
    else:
        notify = f"SELECT pg_notify({channel}, {v['queue']})"
    if not skipping:
        return f"WITH ins AS ({insert}) {notify}"
    return f"""WITH ins AS ({insert}
            ON CONFLICT DO NOTHING
            RETURNING id)
            SELECT (SELECT array_agg(id) FROM ins), ({notify})"""


class TaskInserts:
    """The enqueue statements of one schema, and the insert that resolves unique keys and taken ids."""

    def __init__(self, names: Names) -> None:
        tasks = names.tasks
        # Plain: every row must be new (a collision fails the whole statement). Skipping: rows whose
        # id or unique key is taken are left out, and RETURNING tells which went in. Large: batches
        # past one seq block take one nextval per row (the column's default). Limited: a batch with
        # a limited task writes the limit columns too. Waiting: a batch with dependencies writes the
        # dependency columns too. One BatchColumns per combination, made on first use.
        self._names = names
        self._statements: dict[tuple[bool, bool, bool, bool], BatchColumns] = {}
        self._dependencies = DependencyInserts(names)
        # Who already holds a unique key, or an id, that an INSERT above skipped.
        self.delete_finished = f"DELETE FROM {tasks} WHERE id = ANY($1::text[]) AND status NOT IN {ACTIVE}"
        self.existing = f"""
            SELECT id, unique_key, status IN {ACTIVE} AS active FROM {tasks}
             WHERE id = ANY($1::text[]) OR (unique_key = ANY($2::text[]) AND status IN {ACTIVE})"""

    def _batch(self, *, skipping: bool, large: bool, limited: bool, waiting: bool = False) -> BatchColumns:
        """The statements of one combination (see ``__init__``; waiting: a batch with dependencies)."""
        key = (skipping, large, limited, waiting)
        statements = self._statements.get(key)
        if statements is None:
            names = self._names
            columns = INSERT_COLUMNS + LIMIT_COLUMNS if limited else INSERT_COLUMNS
            statements = self._statements[key] = BatchColumns(
                columns + DEPENDENCY_COLUMNS if waiting else columns,
                lambda values, unnest: _render_insert(names, values, unnest, skipping=skipping, seq_block=not large),
            )
        return statements

    async def insert_in_transaction(
        self,
        connection: object,
        tasks: Sequence[Task],
        events: Sequence[TaskEvent],
        storage: PostgresEventStorage | None,
    ) -> list[str]:
        """Insert ``tasks`` through a caller's connection, in its transaction, with the stored ones' ``events``.

        Raises:
            ConfigurationError: not an asyncpg connection, or its database has no schema of ours.
        """
        if not isinstance(connection, (asyncpg.Connection, asyncpg.pool.PoolConnectionProxy)):
            raise ConfigurationError(
                f"connection= must be an asyncpg connection (or a pool's) for the postgres task queue, "
                f"not {type(connection).__name__}: nothing was enqueued"
            )
        if not tasks:
            return []
        try:
            ids = await self.insert(connection, tasks)  # a pool's proxy acts as a connection
        except asyncpg.UndefinedTableError as exc:
            raise ConfigurationError(
                f"the connection's database has no OmniQ schema {self._names.schema!r} (connect the app to the "
                "same database first): nothing was enqueued"
            ) from exc
        stored = [event for event, task, task_id in zip(events, tasks, ids, strict=False) if task.id == task_id]
        if storage is not None and stored:
            await storage.append_in(connection, stored)
        return ids

    async def insert(self, conn: asyncpg.Connection, tasks: Sequence[Task]) -> list[str]:
        """Insert ``tasks`` on ``conn``; return one id per task (the holder's for a taken unique key)."""
        columns = insert_columns(tasks)
        limits = limit_columns(tasks)
        limited = limits is not None
        if limits is not None:
            columns += limits
        depends = columns[_DEPENDS_ON]  # encoded: mostly the one shared NO_DEPENDENCIES (a C loop of identity checks)
        if depends.count(NO_DEPENDENCIES) != len(depends):
            return await self._insert_waiting(conn, tasks, columns, limited=limited)
        return (await self._insert_rows(conn, tasks, columns, limited=limited))[0]

    async def _insert_waiting(
        self, conn: asyncpg.Connection, tasks: Sequence[Task], columns: list[list[Any]], *, limited: bool
    ) -> list[str]:
        """Insert a batch with dependencies: lock them, insert with ``waiting``, register (one transaction)."""
        statements = self._dependencies
        attempt, live = await statements.lock_live(conn, tasks)
        try:
            plan = WaitingPlan(tasks, live)
            ids, inserted = await self._insert_rows(
                conn, tasks, columns + plan.columns(), limited=limited, waiting=True
            )
            register, correct = plan.settle(tasks, ids, {t.id for t in tasks} if inserted is None else inserted)
            if register[0]:
                await conn.execute(statements.register, *register)
            if correct[0]:
                await conn.execute(statements.correct, *correct)
        except BaseException:
            await attempt.rollback()
            raise
        await attempt.commit()
        return ids

    async def _insert_rows(
        self,
        conn: asyncpg.Connection,
        tasks: Sequence[Task],
        columns: list[list[Any]],
        *,
        limited: bool,
        waiting: bool = False,
    ) -> tuple[list[str], set[str] | None]:
        """Insert ``tasks`` from their ``columns``; return one id per task and the ids this call inserted.

        The inserted ids are None when every row went in (the fast path).
        """
        # The fast path: no unique keys, so only a reused id can collide, and that is rare. A plain
        # INSERT skips the speculative insertion and RETURNING of ON CONFLICT; if an id is taken
        # it fails as a whole and the careful path below runs. Not inside a caller's transaction,
        # where the failure would abort the transaction.
        large = len(tasks) > SEQ_BLOCK
        unique_keys = columns[5]
        if unique_keys.count(None) == len(unique_keys) and not conn.is_in_transaction():
            mask = uniform_mask(columns, vary_first=True)
            try:
                sql, args = self._batch(skipping=False, large=large, limited=limited, waiting=waiting).bind(
                    columns, mask
                )
                await conn.execute(sql, *args)
            except asyncpg.UniqueViolationError:
                pass
            else:
                return [task.id for task in tasks], None
        ids: list[str | None] = [None] * len(tasks)
        pending = list(range(len(tasks)))
        stored: set[str] = set()
        for _ in range(_UNIQUE_RETRIES):
            batch = columns if len(pending) == len(tasks) else [[column[i] for i in pending] for column in columns]
            mask = uniform_mask(batch, vary_first=True)
            sql, args = self._batch(skipping=True, large=large, limited=limited, waiting=waiting).bind(batch, mask)
            inserted = set(await conn.fetchval(sql, *args) or ())
            stored |= inserted
            skipped: list[int] = []
            owner_of_key: dict[str, str] = {}
            for i in pending:
                task = tasks[i]
                if task.id in inserted:
                    ids[i] = task.id
                    if task.unique_key is not None:
                        owner_of_key[task.unique_key] = task.id
                elif task.unique_key is not None and task.unique_key in owner_of_key:
                    ids[i] = owner_of_key[task.unique_key]  # a duplicate key within this batch
                else:
                    skipped.append(i)
            if not skipped:
                break
            pending = await self._resolve_skipped(conn, tasks, skipped, ids)
            if not pending:
                break
        else:
            raise RuntimeError("unique key kept changing hands during enqueue")  # pragma: no cover
        return [task_id if task_id is not None else tasks[i].id for i, task_id in enumerate(ids)], stored

    async def _resolve_skipped(
        self, conn: asyncpg.Connection, tasks: Sequence[Task], skipped: list[int], ids: list[str | None]
    ) -> list[int]:
        """Find who holds each skipped task's key or id; return the ones to insert again."""
        rows = await conn.fetch(
            self.existing,
            [tasks[i].id for i in skipped],
            [tasks[i].unique_key for i in skipped if tasks[i].unique_key is not None],
        )
        by_key = {row["unique_key"]: row["id"] for row in rows if row["active"] and row["unique_key"] is not None}
        active = {row["id"]: row["active"] for row in rows}
        retry: list[int] = []
        for i in skipped:
            task = tasks[i]
            if task.unique_key is not None and task.unique_key in by_key:
                ids[i] = by_key[task.unique_key]
            elif active.get(task.id):
                ids[i] = task.id  # re-enqueueing a live id is a no-op, like a unique key
            else:
                # The id belongs to a finished task (enqueueing it again replaces it),
                # or the key's holder finished between INSERT and lookup.
                retry.append(i)
        finished = [tasks[i].id for i in retry if tasks[i].id in active]
        if finished:
            await conn.execute(self.delete_finished, finished)
        return retry
