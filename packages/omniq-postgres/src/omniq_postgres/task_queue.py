"""PostgresTaskQueue: SKIP LOCKED batch claims, token-checked batch finishes, NOTIFY wake-ups.

Round trips: ``enqueue_many`` is one ``INSERT ... SELECT FROM unnest``: a
plain one for a batch without unique keys outside a caller's transaction,
else (or when an id turns out to be taken) ``ON CONFLICT DO NOTHING``, plus
one lookup only when unique keys or ids collide (``enqueue_recorded`` runs
the events' INSERT of a bulk enqueue at the same time, on a second connection,
and commits it after the tasks'); ``claim_ready`` is
one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)``;
``extend`` and ``finish`` are one ``UPDATE ... FROM unnest`` each, and a
fused ``finish`` upserts the results in the same statement. All times come
from the database clock (``now()``).

Wake-ups: ``<schema>.tasks`` gets a NOTIFY with the queue name when a task
becomes claimable: from the enqueue statement itself (delivered on commit,
also of a caller's transaction), and from a row trigger for retry, release,
recover and resume. Rows inserted by other SQL wake no one; workers find them
at their next poll. A dedicated
listener connection turns that into in-process events. NOTIFY is a hint:
``wait_for_work`` still returns after its timeout, and every reconnect of the
listener wakes all waiters once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import asyncpg
import msgspec

from omniq.base import (
    BaseEventStorage,
    BaseResultStorage,
    BaseTaskQueue,
    Capability,
    claimed_task,
    json_decoder,
    lease_expired_error,
    map_exceptions,
    task_from_row,
)
from omniq.models import Outcome, Task, TaskEvent, TaskStatus
from omniq_postgres._batch import uniform_mask
from omniq_postgres._connection import ERRORS, Listener, PoolOwner, dsn_identity
from omniq_postgres._sql import SEQ_BLOCK, TASK_COLUMNS, TaskSQL
from omniq_postgres.event_storage import PostgresEventStorage
from omniq_postgres.result_storage import PostgresResultStorage, decode_error, encode_error, result_arrays
from omniq_postgres.schema import DEFAULT_SCHEMA

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


__all__ = ["PostgresTaskQueue"]

logger = logging.getLogger("omniq.postgres")

_json = msgspec.json.Encoder()
_decode_deps = json_decoder(tuple[str, ...], "dependency list")
_RECOVER_BATCH = 1000
#: attempts to re-insert a task whose unique key was released between INSERT and lookup.
_UNIQUE_RETRIES = 5


def _task_from_row(row: asyncpg.Record) -> Task:
    """The task of a row, strictly (SerializationError when a column is corrupted)."""
    return task_from_row(_build_task, row)


def _leased_task_from_row(row: asyncpg.Record) -> Task:
    """The task of a row just claimed or recovered: a corrupted one comes back salvaged, for the worker to fail."""
    return claimed_task(_build_task, row, dict)


def _build_task(row: asyncpg.Record) -> Task:
    depends = row["depends_on"]
    return Task(
        id=row["id"],
        func=row["func"],
        payload=row["payload"],
        queue=row["queue"],
        priority=row["priority"],
        unique_key=row["unique_key"],
        status=TaskStatus(row["status"]),
        eta=row["eta"],
        interval=row["interval_seconds"],
        cron=row["cron"],
        paused=row["paused"],
        attempts=row["attempts"],
        max_retries=row["max_retries"],
        timeout=row["timeout"],
        expires_at=row["expires_at"],
        result_ttl=row["result_ttl"],
        depends_on=() if depends == "[]" else _decode_deps(depends),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        worker_id=row["worker_id"],
        error=decode_error(row["error"]),
    )


def _insert_columns(tasks: Sequence[Task]) -> list[list[Any]]:
    """One value list per column of ``INSERT_COLUMNS``."""
    depends = [t.depends_on for t in tasks]
    errors = [t.error for t in tasks]
    return [
        [t.id for t in tasks],
        [t.func for t in tasks],
        [t.payload for t in tasks],
        [t.queue for t in tasks],
        [t.priority for t in tasks],
        [t.unique_key for t in tasks],
        [t.paused for t in tasks],
        [t.eta for t in tasks],
        [t.interval for t in tasks],
        [t.cron for t in tasks],
        [t.attempts for t in tasks],
        [t.max_retries for t in tasks],
        [t.timeout for t in tasks],
        [t.expires_at for t in tasks],
        [t.result_ttl for t in tasks],
        # JSON is encoded once when the whole batch shares one value (the usual case).
        _encoded(depends, _encode_depends),
        [t.created_at for t in tasks],
        _encoded(errors, encode_error),
    ]


def _encode_depends(depends: tuple[str, ...]) -> str:
    return "[]" if not depends else _json.encode(list(depends)).decode()


def _encoded(values: list[Any], encode: Any) -> list[Any]:
    if values.count(values[0]) == len(values):
        return [encode(values[0])] * len(values)
    return [encode(value) for value in values]


async def _insert_events_once_decided(
    storage: PostgresEventStorage, events: Sequence[TaskEvent], decision: asyncio.Future[bool], acquired: asyncio.Event
) -> bool:
    """Insert ``events`` in a transaction, commit it if ``decision`` comes out True; return whether it did.

    ``acquired`` is set once a connection is in hand (at once when the pool has an idle one).
    """
    pool = await storage._get_pool()
    with map_exceptions(ERRORS, url=storage.url):
        async with pool.acquire() as conn:
            acquired.set()
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute(*storage.insert_statement(events))
                commit = await decision
            except BaseException:
                await transaction.rollback()
                raise
            if not commit:
                await transaction.rollback()
                return False
            await transaction.commit()
            await storage.expire_now_and_then(conn)
    return True


def _consume_outcome(future: asyncio.Future[bool]) -> None:
    """Retrieve a background write's exception so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _claim_order(task: Task, row: asyncpg.Record) -> tuple[int, Any, int]:
    return (-task.priority, row["ready_at"], row["seq"])


class PostgresTaskQueue(PoolOwner, BaseTaskQueue):
    """Tasks in ``<schema>.tasks``, claimed with ``FOR UPDATE SKIP LOCKED``.

    Args:
        url: ``postgresql://user:password@host:port/database`` (default
            ``postgresql://127.0.0.1:5432/postgres``).
        schema: the PostgreSQL schema holding OmniQ's tables (created and
            migrated on connect).
        poll_interval: longest sleep of ``wait_for_work`` while LISTEN is unavailable.
        **pool_options: passed to :func:`asyncpg.create_pool` (``min_size``, ``max_size``...).
    """

    backend_name = "postgres"
    capabilities = frozenset(
        {
            Capability.MULTI_PROCESS,
            Capability.MULTI_HOST,
            Capability.BLOCKING_WAIT,
            Capability.FUSED_RESULTS,
            Capability.FUSED_EVENTS,
            Capability.DURABLE,
        }
    )

    def __init__(
        self, url: str | None = None, *, schema: str = DEFAULT_SCHEMA, poll_interval: float = 1.0, **pool_options: Any
    ) -> None:
        self._init_pool_owner(url, schema, pool_options)
        self._sql = TaskSQL(self.names)
        self._poll_interval = poll_interval
        self._fused_sql: dict[str, str] = {}
        # Wake-up bookkeeping: a counter bumped on every NOTIFY / listener reset,
        # the counter value of each queue's last NOTIFY, and each queue set's
        # counter when it last started a claim (to catch NOTIFYs in between).
        self._signal_seq = 0
        self._reset_seq = 0
        self._queue_seq: dict[str, int] = {}
        self._claim_marks: dict[frozenset[str], int] = {}
        self._waiters: set[tuple[frozenset[str], anyio.Event]] = set()
        self._listener = Listener(self.url, self.names.tasks_channel, self._notified, self._reset)

    settings_options: ClassVar[Mapping[str, str]] = {"schema": "key_prefix", "poll_interval": "poll_interval"}

    def __repr__(self) -> str:
        return f"PostgresTaskQueue(schema={self.schema!r})"

    async def close(self) -> None:
        """Stop listening, wake waiters and close the pool (idempotent)."""
        await self._listener.close()
        self._reset()
        await self._close_pool()

    # -- enqueue -----------------------------------------------------------------------------

    async def enqueue(self, task: Task, *, connection: asyncpg.Connection | None = None) -> str:
        """Store a PENDING task (see :meth:`enqueue_many`)."""
        return (await self.enqueue_many([task], connection=connection))[0]

    async def enqueue_many(self, tasks: Sequence[Task], *, connection: asyncpg.Connection | None = None) -> list[str]:
        """Store many tasks with one ``INSERT ... SELECT FROM unnest``.

        Args:
            tasks: the tasks; a task whose ``unique_key`` is held by a PENDING
                or RUNNING task (or by an earlier task of the same batch) is
                not stored and that task's id is returned instead; a task whose
                id already exists is not stored again.
            connection: an asyncpg connection of the caller: the tasks are then
                inserted in the caller's current transaction, so a rollback
                enqueues nothing and workers are notified only on commit.

        Returns:
            one id per task, in order.
        """
        if not tasks:
            return []
        with map_exceptions(ERRORS, url=self.url):
            if connection is not None:
                return await self._enqueue(connection, tasks)
            pool = await self._get_pool()
            async with pool.acquire() as conn:
                return await self._enqueue(conn, tasks)

    async def _enqueue(self, conn: asyncpg.Connection, tasks: Sequence[Task]) -> list[str]:
        columns = _insert_columns(tasks)
        # The fast path: no unique keys, so only a reused id can collide, and that is rare. A plain
        # INSERT skips the speculative insertion and RETURNING of ON CONFLICT; if an id is taken
        # it fails as a whole and the careful path below runs. Not inside a caller's transaction,
        # where the failure would abort the transaction.
        large = len(tasks) > SEQ_BLOCK
        unique_keys = columns[5]
        if unique_keys.count(None) == len(unique_keys) and not conn.is_in_transaction():
            mask = uniform_mask(columns, vary_first=True)
            insert = self._sql.insert_large if large else self._sql.insert
            try:
                sql, args = insert.bind(columns, mask)
                await conn.execute(sql, *args)
            except asyncpg.UniqueViolationError:
                pass
            else:
                return [task.id for task in tasks]
        ids: list[str | None] = [None] * len(tasks)
        pending = list(range(len(tasks)))
        for _ in range(_UNIQUE_RETRIES):
            batch = columns if len(pending) == len(tasks) else [[column[i] for i in pending] for column in columns]
            mask = uniform_mask(batch, vary_first=True)
            insert = self._sql.insert_skipping_large if large else self._sql.insert_skipping
            sql, args = insert.bind(batch, mask)
            inserted = set(await conn.fetchval(sql, *args) or ())
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
        return [task_id if task_id is not None else tasks[i].id for i, task_id in enumerate(ids)]

    def can_fuse_events(self, events: BaseEventStorage) -> bool:
        """True for a :class:`PostgresEventStorage` (any database: its write is a transaction of its own)."""
        return isinstance(events, PostgresEventStorage)

    async def enqueue_recorded(
        self, tasks: Sequence[Task], events: Sequence[TaskEvent], storage: BaseEventStorage
    ) -> tuple[list[str], list[TaskEvent]]:
        """:meth:`enqueue_many` with the events inserted at the same time, on a connection of ``storage``.

        The two INSERTs run in parallel (PostgreSQL puts them on two cores); the events' transaction
        commits only after the tasks' INSERT has, so no event shows for a task that was not stored.
        Only a batch without unique keys overlaps the two: otherwise, when an id turns out to be
        taken, when the events' write fails, or when the event storage has no connection to give
        before the tasks are in (the enqueue never waits for one), the stored tasks' events are
        handed back.
        """
        if not tasks:
            return [], []
        if not isinstance(storage, PostgresEventStorage) or any(t.unique_key is not None for t in tasks):
            return await super().enqueue_recorded(tasks, events, storage)
        decision: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        acquired = asyncio.Event()
        writing = asyncio.ensure_future(_insert_events_once_decided(storage, events, decision, acquired))
        writing.add_done_callback(_consume_outcome)  # also when nobody awaits it (below)
        ids: list[str] | None = None
        try:
            ids = await self.enqueue_many(tasks)
        finally:
            all_stored = ids is not None and ids == [task.id for task in tasks]  # a C loop, mostly identity checks
            decision.set_result(all_stored)
            committed = False
            if not acquired.is_set():
                # The event storage had no connection to give by the time the tasks were in (it is
                # connecting to an unreachable server, or its pool is exhausted): no waiting for it.
                writing.cancel()
            else:
                try:
                    # Shielded: a cancelled enqueue still lets the events' transaction settle.
                    committed = await asyncio.shield(writing)
                except Exception as exc:  # the event storage failed; the tasks are stored all the same
                    logger.warning("writing %d enqueue events failed (%s); handed back to the buffer", len(events), exc)
        assert ids is not None  # an exception from enqueue_many left through the finally
        if committed:
            return ids, []
        return ids, [event for event, task, task_id in zip(events, tasks, ids, strict=True) if task.id == task_id]

    async def _resolve_skipped(
        self, conn: asyncpg.Connection, tasks: Sequence[Task], skipped: list[int], ids: list[str | None]
    ) -> list[int]:
        """Find who holds each skipped task's key or id; return the ones to insert again."""
        rows = await conn.fetch(
            self._sql.existing,
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
            await conn.execute(self._sql.delete_finished, finished)
        return retry

    # -- claim and wake-ups ------------------------------------------------------------------

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` ready tasks with one SKIP LOCKED statement."""
        if limit <= 0 or not queues:
            return []
        self._claim_marks[frozenset(queues)] = self._signal_seq
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            rows = await pool.fetch(self._sql.claim, list(dict.fromkeys(queues)), limit, float(lease), worker_id)
        pairs = [(_leased_task_from_row(row), row) for row in rows]
        pairs.sort(key=lambda pair: _claim_order(*pair))
        return [task for task, _ in pairs]

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Block on NOTIFY for ``queues`` up to ``timeout`` seconds (polling when LISTEN is down)."""
        key = frozenset(queues)
        mark = self._claim_marks.pop(key, self._signal_seq)
        if self._signalled_since(key, mark):
            return
        listening = await self._listener.ensure()
        if self._signalled_since(key, mark):
            return
        # NOTIFY covers new work; a scheduled task falling due needs a timer.
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            due_in = await pool.fetchval(self._sql.next_due, list(queues))
        if due_in is not None:
            if due_in <= 0:
                return
            timeout = min(timeout, due_in)
        if not listening:
            await anyio.sleep(min(timeout, self._poll_interval))
            return
        if self._signalled_since(key, mark):  # a NOTIFY arrived while we asked for the next due time
            return
        waiter = (key, anyio.Event())
        self._waiters.add(waiter)
        try:
            with anyio.move_on_after(timeout):
                await waiter[1].wait()
        finally:
            self._waiters.discard(waiter)

    def _signalled_since(self, queues: frozenset[str], mark: int) -> bool:
        if self._reset_seq > mark:
            return True
        return any(self._queue_seq.get(queue, -1) > mark for queue in queues)

    def _notified(self, queue: str) -> None:
        self._signal_seq += 1
        self._queue_seq[queue] = self._signal_seq
        for queues, event in self._waiters:
            if queue in queues:
                event.set()

    def _reset(self) -> None:
        self._signal_seq += 1
        self._reset_seq = self._signal_seq
        for _, event in self._waiters:
            event.set()

    # -- leases ------------------------------------------------------------------------------

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push back every lease still held, in one statement."""
        if not leases:
            return set()
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            rows = await pool.fetch(self._sql.extend, list(leases), list(leases.values()), float(lease))
        return {row[0] for row in rows}

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True for a :class:`PostgresResultStorage` on the same database (any schema)."""
        return isinstance(results, PostgresResultStorage) and dsn_identity(results.url) == dsn_identity(self.url)

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply a batch of token-checked outcomes in one statement (results fused when given)."""
        if not outcomes:
            return []
        args: list[Any] = [
            [o.task_id for o in outcomes],
            [o.lease_token for o in outcomes],
            [o.kind.value for o in outcomes],
            [o.status.value for o in outcomes],
            [o.eta for o in outcomes],
            [encode_error(o.error) for o in outcomes],
        ]
        sql = self._sql.finish
        if results is not None and self.can_fuse_results(results):
            assert isinstance(results, PostgresResultStorage)
            with_result = [(n, o.result) for n, o in enumerate(outcomes, 1) if o.result is not None]
            if with_result:
                sql = self._fused_sql.get(results.names.results) or self._fused_sql.setdefault(
                    results.names.results, self._sql.finish_fused(results.names.results)
                )
                args.append([n for n, _ in with_result])
                args.extend(result_arrays([r for _, r in with_result]))
        elif results is not None:
            logger.warning("finish() got a result storage it cannot fuse with; results are not stored here")
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            rows = await pool.fetch(sql, *args)
        accepted = {row[0] for row in rows}
        return [n in accepted for n in range(1, len(outcomes) + 1)]

    async def recover(self) -> list[Task]:
        """Requeue (or fail) RUNNING tasks whose lease deadline passed, by the database clock."""
        pool = await self._get_pool()
        recovered: list[Task] = []
        with map_exceptions(ERRORS, url=self.url):
            while True:
                async with pool.acquire() as conn, conn.transaction():
                    rows = await conn.fetch(self._sql.recover_select, _RECOVER_BATCH)
                    if not rows:
                        break
                    expired = [_leased_task_from_row(row) for row in rows]
                    failed = [task.attempts >= task.max_attempts for task in expired]
                    updated = await conn.fetch(
                        self._sql.recover_update,
                        [task.id for task in expired],
                        ["failed" if dead else "pending" for dead in failed],
                        [
                            encode_error(lease_expired_error(t)) if dead else None
                            for t, dead in zip(expired, failed, strict=True)
                        ],
                    )
                recovered.extend(_leased_task_from_row(row) for row in updated)
                if len(rows) < _RECOVER_BATCH:
                    break
        if recovered:
            logger.info("recovered %d task(s) whose lease expired", len(recovered))
        return recovered

    # -- inspection and control --------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """Return the task, or None."""
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            row = await pool.fetchrow(self._sql.get, task_id)
        return None if row is None else _task_from_row(row)

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks in one query, None for unknown ids."""
        if not task_ids:
            return []
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            rows = await pool.fetch(self._sql.get_many, list(task_ids))
        found = {row["id"]: _task_from_row(row) for row in rows}
        return [found.get(task_id) for task_id in task_ids]

    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Task]:
        """Return tasks filtered by status and queue, newest first."""
        sql, args = self._sql.filtered(
            f"SELECT {TASK_COLUMNS} FROM {{tasks}}",
            None if status is None else [TaskStatus(status).value],
            queue,
        )
        sql += f" ORDER BY created_at DESC, seq DESC LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}"
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            rows = await pool.fetch(sql, *args, int(limit), int(offset))
        return [_task_from_row(row) for row in rows]

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue."""
        sql, args = self._sql.filtered(
            "SELECT count(*) FROM {tasks}", None if status is None else [TaskStatus(status).value], queue
        )
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            return int(await pool.fetchval(sql, *args))

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task; its lease (if any) is lost."""
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            return await pool.fetchval(self._sql.cancel, task_id) is not None

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal."""
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            return await pool.fetchval(self._sql.set_paused, task_id, bool(paused)) is not None

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks (all by default); return how many."""
        sql, args = self._sql.filtered(
            "DELETE FROM {tasks}", None if statuses is None else [TaskStatus(s).value for s in statuses], queue
        )
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            status = await pool.execute(sql, *args)
        return int(status.split()[-1])
