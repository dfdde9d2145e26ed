"""Recording outcomes: a batch in one statement, and the finish that claims the slots it frees.

:meth:`Finishes.finish` applies a batch of token-checked outcomes with one
statement (the results upserted in it when fused). :meth:`Finishes.finish_and_claim`
is the worker's call when the batch frees concurrency slots
(:meth:`omniq.base.BaseTaskQueue.finish_and_claim`), one transaction::

    BEGIN; SET LOCAL omniq.handover = 'on'   -- one round trip (simple query)
    <the finish statement>                   -- returns each accepted outcome and the slot it freed
    SELECT ... FROM hand_over(...)           -- the freed slots' held tasks, leased to this worker
    <the claim statement>                    -- only when hand_over leased nothing
    COMMIT

Under ``omniq.handover`` the slot-freed trigger leaves the slots alone and
``hand_over()`` (:func:`omniq_postgres.flow.hand_over_function`) gives each
to the key's first held task in the worker's queues: one write per task
where the trigger's wake-up, a claim that parks it again or admits it, and
the lease took three, each under the key's advisory lock. The slots it does
not hand over wake held tasks as the trigger would, and their NOTIFY (like
every NOTIFY) reaches other workers at the commit, after this worker took
its tasks.

If a statement fails with a server error (not a lost connection), the
transaction rolls back and the outcomes are recorded by :meth:`Finishes.finish`
alone, on another connection (the worker's next claim takes the tasks), so an
error in the claim never keeps outcomes from being recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from omniq_postgres.flow import HAND_OVER_FN, HANDOVER_SETTING
from omniq_postgres.records import claim_order, encode_error, leased_task_from_row, result_arrays
from omniq_postgres.sql import TASK_COLUMNS

if TYPE_CHECKING:
    from omniq.base import BaseResultStorage
    from omniq.connection import Connection
    from omniq.models import Outcome, Task
    from omniq_postgres.schema import Names
    from omniq_postgres.sql import TaskSQL

__all__ = ["Finishes", "claimed_tasks"]

logger = logging.getLogger("omniq.postgres")


def claimed_tasks(rows: Sequence[asyncpg.Record]) -> list[Task]:
    """The tasks of claimed rows, in claim order (an UPDATE's RETURNING does not keep it)."""
    pairs = [(leased_task_from_row(row), row) for row in rows]
    pairs.sort(key=lambda pair: claim_order(*pair))
    return [task for task, _ in pairs]


class Finishes:
    """``finish`` and ``finish_and_claim`` of one schema's task table.

    Args:
        names: the schema's names.
        sql: the schema's statements.
        connection: the task queue's pool connection.
        fusable: whether a result storage can be fused with the finish (the task queue's ``can_fuse_results``).
    """

    def __init__(
        self,
        names: Names,
        sql: TaskSQL,
        connection: Connection[asyncpg.Pool],
        fusable: Callable[[BaseResultStorage], bool],
    ) -> None:
        self._sql = sql
        self._connection = connection
        self._fusable = fusable
        self._fused_sql: dict[str, str] = {}
        self._begin = f"BEGIN; SET LOCAL {HANDOVER_SETTING} = 'on'"
        self._hand_over = (
            f"SELECT {TASK_COLUMNS} FROM {names.q_schema}.{HAND_OVER_FN}"
            "($1::text[], $2::text[], $3::integer, $4::float8, $5::text)"
        )

    async def finish(self, outcomes: Sequence[Outcome], results: BaseResultStorage | None) -> list[bool]:
        """Apply a batch of token-checked outcomes in one statement (results fused when given)."""
        sql, args = self._statement(outcomes, results)
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(sql, *args)
        return _accepted(rows, len(outcomes))

    async def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        results: BaseResultStorage | None,
        queues: list[str],
        limit: int,
        lease: float,
        worker_id: str,
    ) -> tuple[list[bool], list[Task]]:
        """Finish, hand the freed slots over and claim for the places left, in one transaction (see the module)."""
        sql, args = self._statement(outcomes, results)
        pool = await self._connection.client()
        failure: asyncpg.PostgresError | None = None
        with self._connection.errors():
            async with pool.acquire() as conn:
                await conn.execute(self._begin)
                try:
                    rows = await conn.fetch(sql, *args)
                    claimed = await self._claim(conn, rows, queues, limit, lease, worker_id)
                    await conn.execute("COMMIT")
                except BaseException as exc:
                    if not conn.is_closed() and conn.is_in_transaction():
                        await conn.execute("ROLLBACK")
                    if not isinstance(exc, asyncpg.PostgresError) or isinstance(exc, asyncpg.PostgresConnectionError):
                        raise  # the server is away (or a cancel): the caller retries the whole batch
                    failure = exc
        if failure is not None:  # outside the block: the fallback takes a connection of its own
            logger.warning("finishing and claiming in one transaction failed (%s); finishing alone", failure)
            return await self.finish(outcomes, results), []
        return _accepted(rows, len(outcomes)), claimed_tasks(claimed)

    async def _claim(
        self,
        conn: asyncpg.Connection,
        finished: list[asyncpg.Record],
        queues: list[str],
        limit: int,
        lease: float,
        worker_id: str,
    ) -> list[asyncpg.Record]:
        """The rows hand_over() leases for the slots ``finished`` freed, else the claim's.

        When hand_over() leased some, no claim follows: the tasks it woke for the other slots (past the
        key's share of one claim) are the other claimers', so two workers sharing a key each keep half.
        """
        slots = [row[1] for row in finished if row[1] is not None]
        claimed: list[asyncpg.Record] = []
        if slots:
            claimed = await conn.fetch(self._hand_over, slots, queues, limit, float(lease), worker_id)
        if not claimed:
            claimed = await conn.fetch(self._sql.claim, queues, limit, float(lease), worker_id)
        return claimed

    def _statement(self, outcomes: Sequence[Outcome], results: BaseResultStorage | None) -> tuple[str, list[Any]]:
        """The finish statement of ``outcomes`` and its arguments (the fused one when ``results`` can be fused)."""
        args: list[Any] = [
            [o.task_id for o in outcomes],
            [o.lease_token for o in outcomes],
            [o.kind.value for o in outcomes],
            [o.status.value for o in outcomes],
            [o.eta for o in outcomes],
            [encode_error(o.error) for o in outcomes],
        ]
        sql = self._sql.finish
        if results is not None and self._fusable(results):
            table: str = results.names.results  # type: ignore[attr-defined]  # a PostgresResultStorage
            with_result = [(n, o.result) for n, o in enumerate(outcomes, 1) if o.result is not None]
            if with_result:
                sql = self._fused_sql.get(table) or self._fused_sql.setdefault(table, self._sql.finish_fused(table))
                args.append([n for n, _ in with_result])
                args.extend(result_arrays([r for _, r in with_result]))
        elif results is not None:
            logger.warning("finish() got a result storage it cannot fuse with; results are not stored here")
        return sql, args


def _accepted(rows: Sequence[asyncpg.Record], count: int) -> list[bool]:
    """One flag per outcome: whether the finish statement returned its ordinal."""
    accepted = {row[0] for row in rows}
    return [n in accepted for n in range(1, count + 1)]
