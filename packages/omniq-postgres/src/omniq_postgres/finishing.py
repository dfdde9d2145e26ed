"""Recording outcomes: a batch in one statement, and the finish that claims the slots it frees.

:meth:`Finishes.finish` applies a batch of token-checked outcomes with one
statement (the results upserted in it when fused). :meth:`Finishes.finish_and_claim`
is the worker's call when the batch frees concurrency slots
(:meth:`omniq.base.BaseTaskQueue.finish_and_claim`): one statement, its own
transaction::

    WITH o AS (<the outcomes> WHERE set_config('omniq.handover', 'on', true) = 'on'),
         upd AS (<the finish's UPDATE>), [res AS (<the results' upsert>),]
         fin AS (<each accepted outcome and the slot it freed>),
         acc AS (<their numbers, and the freed slots' keys>)
    SELECT <task columns>, acc.ords FROM acc LEFT JOIN LATERAL hand_over(acc.slots, ...) ON true

then, only when hand_over leased nothing, the claim statement. The outcomes'
scan sets ``omniq.handover`` (for the transaction) before the UPDATE changes
a row, so the slot-freed trigger leaves the slots alone and ``hand_over()``
(:func:`omniq_postgres.flow.hand_over_function`) gives each to the key's
first held task in the worker's queues: one write per task where the
trigger's wake-up, a claim that parks it again or admits it, and the lease
took three, each under the key's advisory lock. The slots it does not hand
over wake held tasks as the trigger would, and their NOTIFY reaches other
workers at the commit. Held rows are PENDING and the finished ones RUNNING,
so the function never writes a row the statement's UPDATE wrote.

It was a transaction of four round trips (BEGIN and SET LOCAL, the finish,
hand_over, COMMIT): a drain of 20,000 tasks under ``concurrency_limit=50``
spent 4.0 ms per batch of 25 in them (``benchmarks/flow_control.py``).

If the statement fails with a server error (not a lost connection), the
outcomes are recorded by :meth:`Finishes.finish` alone (the worker's next
claim takes the tasks), so an error in the hand-over never keeps outcomes
from being recorded; a claim that fails after it is logged and answers none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from omniq.base import claim_after_finish_failed
from omniq_postgres.flow import HAND_OVER_FN
from omniq_postgres.records import claim_order, encode_error, leased_task_from_row, result_arrays
from omniq_postgres.sql import TASK_COLUMNS, upsert_results

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
        self._handover_sql: dict[tuple[str | None, int], str] = {}
        self._hand_over = f"{names.q_schema}.{HAND_OVER_FN}"

    async def finish(self, outcomes: Sequence[Outcome], results: BaseResultStorage | None) -> list[bool]:
        """Apply a batch of token-checked outcomes in one statement (results fused when given)."""
        sql, args = self._statement(outcomes, results)
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(sql, *args)
        return _accepted({row[0] for row in rows}, len(outcomes))

    async def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        results: BaseResultStorage | None,
        queues: list[str],
        limit: int,
        lease: float,
        worker_id: str,
    ) -> tuple[list[bool], list[Task]]:
        """Finish and hand the freed slots over in one statement, then claim if it leased none (see the module)."""
        sql, args = self._statement(outcomes, results, handing_over=True)
        pool = await self._connection.client()
        failure: asyncpg.PostgresError | None = None
        with self._connection.errors():
            try:
                rows = await pool.fetch(sql, *args, queues, limit, float(lease), worker_id)
            except asyncpg.PostgresError as exc:
                if isinstance(exc, asyncpg.PostgresConnectionError):
                    raise  # the server is away: the caller retries the whole batch
                failure = exc
        if failure is not None:
            logger.warning("finishing and handing slots over in one statement failed (%s); finishing alone", failure)
            return await self.finish(outcomes, results), []
        accepted = _accepted(set(rows[0]["ords"] or ()) if rows else set(), len(outcomes))
        claimed = [row for row in rows if row["id"] is not None]
        if claimed or limit <= 0:
            return accepted, claimed_tasks(claimed)
        try:
            with self._connection.errors():
                claimed = await pool.fetch(self._sql.claim, queues, limit, float(lease), worker_id)
        except Exception as exc:
            return accepted, claim_after_finish_failed(exc)
        return accepted, claimed_tasks(claimed)

    def _handing_over(self, table: str | None, first: int) -> str:
        """The finish statement that hands the slots over (``table``: the fused results'; ``first``: its next parameter)."""
        key = (table, first)
        sql = self._handover_sql.get(key)
        if sql is None:
            res = f" res AS ({upsert_results(table, 7, accepted='upd')} RETURNING 1)," if table else ""
            q, wanted, lease, worker = (f"${n}" for n in range(first, first + 4))
            sql = self._handover_sql[key] = f"""{self._sql.handover_head}{res}
                fin AS ({self._sql.finished_rows}),
                acc AS (SELECT array_agg(ord) AS ords,
                               coalesce(array_agg(slot) FILTER (WHERE slot IS NOT NULL), '{{}}') AS slots FROM fin)
                SELECT {TASK_COLUMNS}, acc.ords
                  FROM acc LEFT JOIN LATERAL {self._hand_over}(acc.slots, {q}::text[], {wanted}::integer,
                                                               {lease}::float8, {worker}::text) AS h ON true"""
        return sql

    def _statement(
        self, outcomes: Sequence[Outcome], results: BaseResultStorage | None, *, handing_over: bool = False
    ) -> tuple[str, list[Any]]:
        """The finish statement of ``outcomes`` and its arguments (the fused one when ``results`` can be fused).

        ``handing_over``: the statement of :meth:`finish_and_claim`, whose four last parameters follow.
        """
        args: list[Any] = [
            [o.task_id for o in outcomes],
            [o.lease_token for o in outcomes],
            [o.kind.value for o in outcomes],
            [o.status.value for o in outcomes],
            [o.eta for o in outcomes],
            [encode_error(o.error) for o in outcomes],
        ]
        fused: str | None = None
        if results is not None and self._fusable(results):
            table: str = results.names.results  # type: ignore[attr-defined]  # a PostgresResultStorage
            with_result = [(n, o.result) for n, o in enumerate(outcomes, 1) if o.result is not None]
            if with_result:
                fused = table
                args.append([n for n, _ in with_result])
                args.extend(result_arrays([r for _, r in with_result]))
        elif results is not None:
            logger.warning("finish() got a result storage it cannot fuse with; results are not stored here")
        if handing_over:
            return self._handing_over(fused, len(args) + 1), args
        if fused is None:
            return self._sql.finish, args
        return self._fused_sql.get(fused) or self._fused_sql.setdefault(fused, self._sql.finish_fused(fused)), args


def _accepted(ordinals: set[int], count: int) -> list[bool]:
    """One flag per outcome (numbered from 1): whether the finish accepted it (its number is in ``ordinals``)."""
    return [n in ordinals for n in range(1, count + 1)]
