"""Dependencies in the database: a dependant waits, not claimable, until the step that ends its last dependency.

The rules are :meth:`omniq.base.BaseTaskQueue.enqueue`'s (``Capability.DEPENDENCIES``);
here is how PostgreSQL holds them across every connection (migration 6
creates what this module describes):

- **Columns and table.** ``tasks.waiting`` is how many dependencies a task
  still waits for (0 for almost every task). ``tasks.has_dependants`` is NULL
  until a dependant registers on the task, then true. ``dependants`` holds one
  row (dependency id, dependant id) per registration, until the dependency
  ends.
- **Not claimable.** While ``waiting > 0`` the task's ``ready_at`` is
  ``'infinity'``: the claim's existing ``ready_at <= now()`` condition (an
  index condition of ``tasks_claim_idx``) leaves it out, so the claim
  statement and its plan are unchanged. It sorts after every ready task of its
  priority, like a task scheduled far ahead. When ``waiting`` reaches 0 it gets
  back the ``ready_at`` an enqueue gives (``eta``, else ``created_at``): its
  place in claim order (priority, then that, then ``seq``).
- **Enqueue** (:class:`DependencyInserts`; only for a batch with
  ``depends_on``). In one transaction (a savepoint inside a caller's): first
  the dependencies that are stored and not terminal are locked (``FOR SHARE``
  when already flagged, else ``FOR NO KEY UPDATE`` and flagged), all with
  ``SKIP LOCKED``; then the batch is inserted with each task's ``waiting``,
  then its registrations. A dependency that cannot be locked at once (being
  finished, claimed, or flagged by another enqueue) makes the attempt roll
  back, wait for that row alone, and start again: an enqueue never waits
  while holding a dependency, so it cannot deadlock with a finish that holds
  several of them. Dependencies earlier in the same batch are counted in
  Python (they are inserted with the flag); one that a unique key kept out of
  the batch is taken back off after the insert.
- **Ends** (:data:`RELEASE_FN`, called through :func:`released`). Each
  statement that ends tasks (finish and fused finish, cancel, recover's
  update) or deletes them (purge) returns the flag of its rows, and the same
  statement passes the ids of the flagged rows it ended to
  ``release_dependants()``: it deletes their registrations, counts their
  dependants down and wakes the queues of those that became ready (NOTIFY,
  on commit), in the ending transaction. The function is STRICT and gets
  NULL when no row was flagged, so it is not even called then.

**Why nothing is missed or counted twice.** Under READ COMMITTED the
enqueue's lock means: a dependency that was ending when the enqueue looked is
waited for and then seen terminal (not counted); one that ends later has its
ending UPDATE wait for the enqueue's commit, and then reads the new flag from
the row it updates (the latest version), so the function is called, and its
statements (each with a fresh snapshot, as in any PL/pgSQL function) see the
committed registrations and dependant. A plain CTE of the ending statement
would not: its snapshot predates the enqueue's commit. Decrements of one
dependant by concurrent finishers serialise on the dependant's row, so the
last one, and only it, sees its count reach 0. The function locks all the
dependants of a statement at once, in id order, before it updates them, so
finishers of different dependencies of common dependants queue up rather
than deadlock (a row trigger would lock them row by row, in batch order, and
did deadlock).

**What a task without dependencies pays.** Nothing on enqueue (the same
statement: a check of the batch's encoded ``depends_on`` column in Python
picks the path), nothing on claim (the same statement; waiting rows were never
ready), and on finish, cancel and recover one more read of the rows the
statement already returns (a flag that is NULL) and no call, no extra
statement or round trip.

A caller's transaction that enqueues a dependant holds the dependency rows it
locked until it commits: the dependencies' ``extend`` and ``finish`` wait for
that commit, so such transactions should be short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg

    from omniq.models import Task
    from omniq_postgres.schema import Names

__all__ = [
    "DEPENDANTS_TABLE",
    "DEPENDENCY_COLUMNS",
    "RELEASE_FN",
    "WAITING_READY_AT",
    "Attempt",
    "DependencyInserts",
    "WaitingPlan",
    "dependency_migration",
    "generation_migration",
    "released",
]

DEPENDANTS_TABLE = "dependants"  # (dependency, dependant): who waits on a task that has not ended yet
RELEASE_FN = "release_dependants"  # fn(ids): flagged tasks ended or were deleted: count their dependants down
#: the statuses of a task that has not ended (as omniq_postgres.sql.ACTIVE, which imports this module).
_ACTIVE = "('pending', 'running')"
#: the enqueue parameters a batch with dependencies adds (after the limit columns, when present).
DEPENDENCY_COLUMNS = (
    ("waiting", "int4"),
    ("has_dependants", "bool"),
)
#: ``ready_at`` of a task while it waits: after any time a claim compares it with.
WAITING_READY_AT = "'infinity'::timestamptz"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def dependency_migration(n: Names) -> list[str]:
    """The statements of migration 6: the columns, the registrations' table and the release function."""
    s, tasks = n.q_schema, n.tasks
    dependants = f"{s}.{DEPENDANTS_TABLE}"
    return [
        # A constant default and a NULL one: no table rewrite.
        f"""ALTER TABLE {tasks} ADD COLUMN IF NOT EXISTS waiting integer NOT NULL DEFAULT 0,
                ADD COLUMN IF NOT EXISTS has_dependants boolean""",
        # Looked up only by dependency (the primary key's first column), when it ends.
        f"""CREATE TABLE IF NOT EXISTS {dependants} (
                dependency text NOT NULL,
                dependant  text NOT NULL,
                PRIMARY KEY (dependency, dependant))""",
        _release_function(n, generations=False),
    ]


def generation_migration(n: Names) -> list[str]:
    """The statements of migration 7: a registration names its dependant's ``seq``, checked in place of its list.

    A registration left by an earlier task of the same id (ended, then replaced by an enqueue of
    its id: a new row, a new ``seq``) must not lower the task stored now. Migration 6 told them
    apart by ``depends_on ? dependency``, which reads the dependant's whole list at every end of a
    dependency: a fan-in of n members read n lists of n ids. A row written before this migration
    (no seq) is still checked that way.
    """
    return [
        f"ALTER TABLE {n.q_schema}.{DEPENDANTS_TABLE} ADD COLUMN IF NOT EXISTS dependant_seq bigint",
        _release_function(n, generations=True),
    ]


def _release_function(n: Names, *, generations: bool) -> str:
    """``release_dependants(ended)``: migration 6's, or migration 7's, which checks registrations by ``seq``."""
    s, tasks = n.q_schema, n.tasks
    dependants = f"{s}.{DEPENDANTS_TABLE}"
    channel = _literal(n.tasks_channel)
    if generations:
        taken = "dependency, dependant, dependant_seq"
        collect = "array_agg(dependency), array_agg(dependant), array_agg(dependant_seq)"
        into = "v_deps, v_dependants, v_seqs"
        edges = "unnest(v_deps, v_dependants, v_seqs) AS e(dependency, dependant, seq)"
        same_task = "(t.seq = e.seq OR (e.seq IS NULL AND t.depends_on ? e.dependency))"
    else:
        taken = "dependency, dependant"
        collect = "array_agg(dependency), array_agg(dependant)"
        into = "v_deps, v_dependants"
        edges = "unnest(v_deps, v_dependants) AS e(dependency, dependant)"
        same_task = "t.depends_on ? e.dependency"
    # p_ended: tasks that just ended or were deleted. The dependants are locked in id order
    # before the update (see the module). A registration left by an earlier task of the same
    # id (an id enqueued again) counts only when it names the task stored now.
    # Returns how many dependants became ready.
    return f"""
        CREATE OR REPLACE FUNCTION {s}.{RELEASE_FN}(p_ended text[]) RETURNS integer
        LANGUAGE plpgsql STRICT AS $$
        DECLARE
            v_deps text[];
            v_dependants text[];
            v_seqs bigint[];
            v_ready integer;
            v_woken bigint;
        BEGIN
            WITH d AS (DELETE FROM {dependants} WHERE dependency = ANY (p_ended) RETURNING {taken})
            SELECT {collect} INTO {into} FROM d;
            IF v_deps IS NULL THEN
                RETURN 0;
            END IF;
            PERFORM 1 FROM {tasks} WHERE id = ANY (v_dependants) AND waiting > 0 ORDER BY id FOR NO KEY UPDATE;
            WITH c AS (SELECT e.dependant AS id, count(*)::integer AS n
                         FROM {edges}
                         JOIN {tasks} AS t ON t.id = e.dependant AND {same_task}
                        GROUP BY e.dependant),
                 u AS (UPDATE {tasks} AS t
                          SET waiting = greatest(t.waiting - c.n, 0),
                              ready_at = CASE WHEN t.waiting <= c.n THEN coalesce(t.eta, least(t.created_at, now()))
                                              ELSE t.ready_at END
                         FROM c
                        WHERE t.id = c.id AND t.waiting > 0
                       RETURNING t.queue, t.waiting, t.status, t.paused)
            SELECT (SELECT count(*) FROM u WHERE waiting = 0),
                   (SELECT count(pg_notify({channel}, r.queue))
                      FROM (SELECT DISTINCT queue FROM u WHERE waiting = 0 AND status = 'pending' AND NOT paused) AS r)
              INTO v_ready, v_woken;
            RETURN v_ready;
        END $$"""


def released(names: Names, rows: str, ended: str) -> str:
    """A FROM item of one row that releases the dependants of the ended rows among ``rows``.

    Args:
        names: the schema's names.
        rows: a CTE of the ending statement with the columns ``id`` and ``has_dependants``.
        ended: the condition, on those columns, of a row the statement ended or deleted.

    ``release_dependants()`` gets the ids of the flagged ended rows, NULL when there is none
    (the usual case: STRICT, it is not called then). Cross-joined with ``rows``, it keeps their
    number of rows.
    """
    flagged = f"SELECT array_agg(id) FROM {rows} WHERE has_dependants AND {ended}"
    return f"(SELECT {names.q_schema}.{RELEASE_FN}(({flagged}))) AS released(ready)"


class WaitingPlan:
    """What a batch's dependencies add to its INSERT: each task's ``waiting`` and flag, and its registrations.

    Args:
        tasks: the batch, in enqueue order.
        live: the ids of the batch's dependencies that are stored, not terminal and locked.

    A dependency counts when it is live, or when it is an earlier task of the batch (inserted
    now, with the flag); a later task of the batch, an unknown id or a terminal task does not.
    """

    def __init__(self, tasks: Sequence[Task], live: set[str]) -> None:
        position: dict[str, int] = {}
        for i, task in enumerate(tasks):
            position.setdefault(task.id, i)
        self.waiting = [0] * len(tasks)
        self.flagged: list[bool | None] = [None] * len(tasks)
        self.registrations: list[tuple[str, int]] = []  # (dependency id, dependant's index)
        self.in_batch: list[tuple[int, int]] = []  # (dependant's index, dependency's index): counted as stored
        for i, task in enumerate(tasks):
            if not task.depends_on:
                continue
            for dep in dict.fromkeys(task.depends_on):
                if dep not in live:
                    j = position.get(dep)
                    if j is None or j >= i:
                        continue
                    self.flagged[j] = True
                    self.in_batch.append((i, j))
                self.waiting[i] += 1
                self.registrations.append((dep, i))

    def columns(self) -> list[list[Any]]:
        """The value lists of :data:`DEPENDENCY_COLUMNS`."""
        return [self.waiting, self.flagged]

    def settle(self, tasks: Sequence[Task], ids: Sequence[str], inserted: set[str]) -> tuple[list[Any], list[Any]]:
        """After the insert: the registrations of the inserted dependants, and the ``waiting`` to correct.

        An earlier task of the batch that a unique key kept out (its id names no stored task)
        was counted by :meth:`columns`; it is taken back off here.

        Returns:
            ``([dependency ids], [dependant ids])`` to register, and ``([ids], [waiting])``
            of the inserted tasks whose count was too high (usually empty).
        """
        dropped: dict[int, set[str]] = {}
        for i, j in self.in_batch:
            if ids[j] != tasks[j].id:
                dropped.setdefault(i, set()).add(tasks[j].id)
        deps: list[str] = []
        dependants: list[str] = []
        for dep, i in self.registrations:
            task_id = tasks[i].id
            if task_id in inserted and dep not in dropped.get(i, ()):
                deps.append(dep)
                dependants.append(task_id)
        fix_ids: list[str] = []
        fix_waiting: list[int] = []
        for i, gone in dropped.items():
            if tasks[i].id in inserted:
                fix_ids.append(tasks[i].id)
                fix_waiting.append(self.waiting[i] - len(gone))
        return [deps, dependants], [fix_ids, fix_waiting]


class DependencyInserts:
    """The statements around the INSERT of a batch with dependencies (see the module).

    Args:
        names: the schema's names.
    """

    def __init__(self, names: Names) -> None:
        tasks = names.tasks
        # The dependencies stored and not terminal in the statement's snapshot (s), locked without
        # waiting: shared when flagged already, else exclusively and flagged (flag). The status
        # returned is the locked row's, which may have ended since the snapshot; NULL: not locked.
        self.lock = f"""
            WITH s AS MATERIALIZED (SELECT id, has_dependants IS TRUE AS flagged FROM {tasks}
                                     WHERE id = ANY($1::text[]) AND status IN {_ACTIVE}),
                 shared AS MATERIALIZED (SELECT id, status FROM {tasks}
                                          WHERE id IN (SELECT id FROM s WHERE flagged)
                                            FOR SHARE SKIP LOCKED),
                 own AS MATERIALIZED (SELECT id, status FROM {tasks}
                                       WHERE id IN (SELECT id FROM s WHERE NOT flagged)
                                         FOR NO KEY UPDATE SKIP LOCKED),
                 flag AS (UPDATE {tasks} AS t SET has_dependants = true
                            FROM own WHERE t.id = own.id AND own.status IN {_ACTIVE})
            SELECT s.id, coalesce(shared.status, own.status) AS status
              FROM s LEFT JOIN shared USING (id) LEFT JOIN own USING (id)"""
        # Waits until whoever holds the row (shared or not) has finished; rolled back at once.
        self.wait = f"SELECT 1 FROM {tasks} WHERE id = $1 FOR NO KEY UPDATE"
        # Each names its dependant's seq (migration 7); one an earlier task of the same id left
        # takes the new seq (the dependant depends on that dependency again).
        self.register = f"""
            INSERT INTO {names.q_schema}.{DEPENDANTS_TABLE} (dependency, dependant, dependant_seq)
            SELECT e.dependency, e.dependant, t.seq
              FROM unnest($1::text[], $2::text[]) AS e(dependency, dependant)
              JOIN {tasks} AS t ON t.id = e.dependant
            ON CONFLICT (dependency, dependant) DO UPDATE SET dependant_seq = EXCLUDED.dependant_seq"""
        channel = _literal(names.tasks_channel)
        self.correct = f"""
            WITH u AS (
                UPDATE {tasks} AS t
                   SET waiting = c.waiting,
                       ready_at = CASE WHEN c.waiting = 0 THEN coalesce(t.eta, least(t.created_at, now()))
                                       ELSE t.ready_at END
                  FROM unnest($1::text[], $2::int4[]) AS c(id, waiting)
                 WHERE t.id = c.id
                RETURNING t.queue, t.waiting, t.paused)
            SELECT count(pg_notify({channel}, r.queue))
              FROM (SELECT DISTINCT queue FROM u WHERE waiting = 0 AND NOT paused) AS r"""

    async def lock_live(self, conn: asyncpg.Connection, tasks: Sequence[Task]) -> tuple[Attempt, set[str]]:
        """Lock the batch's stored, non-terminal dependencies; return the open attempt and their ids.

        The attempt (see :class:`Attempt`) holds the locks until the caller commits or rolls it
        back. When a dependency is locked by someone else, the attempt is rolled back, that row is
        waited for holding nothing, and the lock is tried again.
        """
        wanted = list(dict.fromkeys(dep for task in tasks for dep in task.depends_on))
        while True:
            attempt = Attempt(conn)
            await attempt.start()
            try:
                rows = await conn.fetch(self.lock, wanted)
            except BaseException:
                await attempt.rollback()
                raise
            blocked = [row["id"] for row in rows if row["status"] is None]
            if not blocked:
                return attempt, {row["id"] for row in rows if row["status"] in ("pending", "running")}
            await attempt.rollback()
            waiting = Attempt(conn)
            await waiting.start()
            try:
                await conn.execute(self.wait, blocked[0])
            finally:
                await waiting.rollback()


class Attempt:
    """A transaction on one of our connections, or a savepoint inside a caller's open transaction.

    Plain SQL rather than ``asyncpg.Connection.transaction()``, which refuses to nest in a
    transaction the caller began with ``BEGIN``.
    """

    _SAVEPOINT = "omniq_dependencies"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._nested = conn.is_in_transaction()

    async def start(self) -> None:
        """BEGIN, or SAVEPOINT inside the caller's transaction."""
        await self._conn.execute(f"SAVEPOINT {self._SAVEPOINT}" if self._nested else "BEGIN")

    async def commit(self) -> None:
        """COMMIT, or RELEASE the savepoint (its locks pass to the caller's transaction)."""
        await self._conn.execute(f"RELEASE SAVEPOINT {self._SAVEPOINT}" if self._nested else "COMMIT")

    async def rollback(self) -> None:
        """ROLLBACK, or undo back to the savepoint (releasing its locks) and drop it."""
        sql = f"ROLLBACK TO SAVEPOINT {self._SAVEPOINT}; RELEASE SAVEPOINT {self._SAVEPOINT}"
        await self._conn.execute(sql if self._nested else "ROLLBACK")
