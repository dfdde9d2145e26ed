"""Flow control in the database: limits applied at claim, slots freed by a trigger, paused queues.

The rules are :mod:`omniq.flow_control`'s; here is how PostgreSQL holds them
across every claimer (migration 5 creates what this module describes):

- **Columns.** A task's :class:`~omniq.flow_control.Limits` are four columns
  (``limit_key``, ``limit_concurrency``, ``limit_rate``, ``limit_burst``), NULL
  for an unlimited task; ``held`` and ``rate_reserved`` are NULL unless set.
- **Claim.** The claim statement (:class:`omniq_postgres.sql.TaskSQL`) first
  probes ``tasks_limited_idx``, a partial index holding only pending limited
  tasks: is one ready in the claimed queues? When none is (always, for a
  workload without limits: the index is empty), the plain SKIP LOCKED UPDATE
  claims unlimited rows as before. When one is, the same statement calls
  ``claim_flow()`` instead (:data:`CLAIM_FLOW_FN`), which walks the ready rows
  in claim order and admits each limited one under its key's advisory lock.
- **Admission** (in ``claim_flow``). Per key, one transaction at a time:
  ``pg_try_advisory_xact_lock`` of the key (a claimer that cannot take it
  skips that row, so claimers never wait on each other or deadlock). Holders
  are counted from ``tasks_holders_idx`` (RUNNING, concurrency-limited, lease
  unexpired by ``now()``) once per key and call, then kept in step as rows are
  admitted, so ``extend`` and an expired lease need nothing more. The GCRA
  ``tat`` of each rate-limited key lives in ``flow_keys``. A row that may not
  start is parked: its ``eta`` and ``ready_at`` move to the time it may, with
  ``held`` or ``rate_reserved`` set, so each waiting row is parked once and the
  idle workers' next-due timer covers it; a key found full has all its ready
  rows in the claimed queues parked by one UPDATE (a backlog of 10,000: one
  claim of 165 ms, where rounds of 1,000 rows took ten of 55 ms).
- **Freed slots.** A row trigger (``tasks_slot_freed`` on UPDATE,
  ``tasks_slot_purged`` on DELETE), whose WHEN clause is true only for a
  concurrency-limited row leaving RUNNING, wakes the first held row of the key
  (``tasks_held_idx``) in the finishing transaction (finish, cancel, recover,
  purge, whatever the SQL) and NOTIFYs its queue. It takes the key's lock
  *shared*: finishers never block one another, and a claimer admitting the key
  (exclusive) either saw the holder leave or has parked its rows before the
  trigger looks for them.
- **Handed over** (migration 9). A finish that claims (:mod:`omniq_postgres.finishing`)
  sets ``omniq.handover`` for its transaction; the trigger's WHEN clause then
  leaves the slots to ``hand_over()`` (:data:`HAND_OVER_FN`), which leases the
  key's first held rows in the worker's queues (one write each, under the same
  shared lock), at most a claim's share of the limit, and wakes held rows for
  the slots it does not hand over, for the other workers. A drain of 20,000
  no-op tasks under ``concurrency_limit=50`` (``benchmarks/flow_control.py``,
  two workers) went from 4,300 to 7,400 tasks/s with one worker cycling all
  fifty slots, and to 8,500 with each worker keeping its half.
- **Paused queues** are rows of ``paused_queues``; the claim and the next-due
  query leave those queues out in the same statement (an anti-join with a
  table of a few rows). A resume NOTIFYs the queue, as an enqueue does.

An unlimited task pays: a NULL check in the claim's scan filter, the index
probe above (one per claim, not per task), a trigger WHEN check on each
finish/cancel/recover, and no extra round trip anywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

    from omniq.connection import Connection
    from omniq_postgres.schema import Names

__all__ = [
    "CLAIM_FLOW_FN",
    "HANDOVER_SETTING",
    "HAND_OVER_FN",
    "FLOW_KEYS_TABLE",
    "PAUSED_TABLE",
    "QueuePauses",
    "claim_flow_function",
    "flow_migration",
    "hand_over_function",
    "slot_freed_trigger",
]

FLOW_KEYS_TABLE = "flow_keys"  # one row per rate-limited key: its GCRA theoretical arrival time (epoch seconds)
PAUSED_TABLE = "paused_queues"  # one row per paused queue
CLAIM_FLOW_FN = "claim_flow"  # the claim of ready rows when limited ones are among them
SLOT_FREED_FN = "flow_slot_freed"  # row trigger fn: a concurrency-limited row left RUNNING: wake one held row
LIMITED_INDEX = "tasks_limited_idx"  # pending limited rows by queue and ready time (the claim's probe)
HOLDERS_INDEX = "tasks_holders_idx"  # RUNNING concurrency-limited rows by key and lease deadline
HELD_INDEX = "tasks_held_idx"  # rows held for a concurrency slot, by key, in claim order
#: what leasing a row sets, in claim_flow() and hand_over() (parameters p_lease, p_worker).
_CLAIM_SET = """status = 'running', attempts = t.attempts + 1, lease_token = gen_random_uuid()::text,
               lease_expires_at = now() + p_lease * interval '1 second', started_at = now(),
               updated_at = now(), worker_id = p_worker, held = NULL, rate_reserved = NULL"""
#: the setting (SET LOCAL) under which the slot-freed trigger leaves freed slots to hand_over().
HANDOVER_SETTING = "omniq.handover"
HAND_OVER_FN = "hand_over"  # a finish that claims: the slots it freed go to held tasks (migration 9)
#: rows one claim_flow call examines at most (the rest stay ready for the next claim).
_EXAMINED = 1000
#: a reserved start this close to now (seconds) is now: float rounding of the engine clock.
_SLACK = 1e-6


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _key_lock(n: Names, key: str) -> str:
    """The advisory lock key of the limit key ``key`` (an SQL expression).

    The schema and the key, hashed to a bigint (a space apart from the migration lock's two-int keys).
    """
    return f"hashtextextended({_literal(n.schema + '|')} || {key}, 0)"


def flow_migration(n: Names) -> list[str]:
    """The statements of migration 5: the columns, indexes, tables, claim function and triggers."""
    s, tasks = n.q_schema, n.tasks
    return [
        f"""ALTER TABLE {tasks} ADD COLUMN IF NOT EXISTS limit_key text,
                ADD COLUMN IF NOT EXISTS limit_concurrency integer,
                ADD COLUMN IF NOT EXISTS limit_rate double precision,
                ADD COLUMN IF NOT EXISTS limit_burst integer,
                ADD COLUMN IF NOT EXISTS held boolean,
                ADD COLUMN IF NOT EXISTS rate_reserved boolean""",
        f"""CREATE INDEX IF NOT EXISTS {LIMITED_INDEX} ON {tasks} (queue, ready_at)
            WHERE status = 'pending' AND limit_key IS NOT NULL AND NOT paused""",
        f"""CREATE INDEX IF NOT EXISTS {HOLDERS_INDEX} ON {tasks} (limit_key, lease_expires_at)
            WHERE status = 'running' AND limit_concurrency IS NOT NULL""",
        f"""CREATE INDEX IF NOT EXISTS {HELD_INDEX} ON {tasks} (limit_key, priority DESC, created_at, seq)
            WHERE status = 'pending' AND held""",
        f"CREATE TABLE IF NOT EXISTS {s}.{FLOW_KEYS_TABLE} (key text PRIMARY KEY, tat double precision NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS {s}.{PAUSED_TABLE} (
                queue     text PRIMARY KEY,
                paused_at timestamptz NOT NULL DEFAULT now())""",
        claim_flow_function(n),
        # The first held row of the key becomes ready at its old place. Shared lock: see the module.
        f"""
        CREATE OR REPLACE FUNCTION {s}.{SLOT_FREED_FN}() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            v_queue text;
        BEGIN
            PERFORM pg_advisory_xact_lock_shared({_key_lock(n, "OLD.limit_key")});
            UPDATE {tasks} AS t SET held = NULL, eta = NULL, ready_at = least(t.created_at, now()), updated_at = now()
             WHERE t.id = (SELECT id FROM {tasks}
                            WHERE limit_key = OLD.limit_key AND status = 'pending' AND held
                            ORDER BY priority DESC, created_at, seq
                            LIMIT 1
                              FOR UPDATE SKIP LOCKED)
            RETURNING t.queue INTO v_queue;
            IF v_queue IS NOT NULL THEN
                PERFORM pg_notify(TG_ARGV[0], v_queue);
            END IF;
            RETURN NULL;
        END $$""",
        slot_freed_trigger(n, handover=False),
        f"""CREATE TRIGGER tasks_slot_purged AFTER DELETE ON {tasks} FOR EACH ROW
            WHEN (OLD.status = 'running' AND OLD.limit_concurrency IS NOT NULL)
            EXECUTE FUNCTION {s}.{SLOT_FREED_FN}({_literal(n.tasks_channel)})""",
    ]


def slot_freed_trigger(n: Names, *, handover: bool) -> str:
    """The row trigger that calls the slot-freed function when a concurrency-limited row leaves RUNNING.

    ``handover``: migration 9's trigger, which does not fire inside a finish that claims (its
    transaction set ``omniq.handover``): :data:`HAND_OVER_FN` gives the slot to a held task itself.
    The check is in the WHEN clause, so such a finish calls no function per row.
    """
    s, tasks = n.q_schema, n.tasks
    skip = f" AND current_setting({_literal(HANDOVER_SETTING)}, true) IS DISTINCT FROM 'on'" if handover else ""
    return f"""CREATE TRIGGER tasks_slot_freed AFTER UPDATE ON {tasks} FOR EACH ROW
            WHEN (OLD.status = 'running' AND NEW.status <> 'running' AND OLD.limit_concurrency IS NOT NULL{skip})
            EXECUTE FUNCTION {s}.{SLOT_FREED_FN}({_literal(n.tasks_channel)})"""


def hand_over_function(n: Names) -> str:
    """``hand_over()``: the slots a finish that claims freed go to the held tasks of their keys.

    Per key (a key once per slot freed, in ``p_keys``), under the key's shared lock as the trigger
    takes it: the first held rows in the claimed queues, in claim order, are leased to the caller
    (a row with a rate limit is left to ``claim_flow()``'s rate check), up to ``p_wanted`` in all
    and a claim's share of the key's limit (:func:`omniq.flow_control.claim_share`, said again in
    SQL), so two workers sharing a key each cycle their half and one's transaction overlaps the
    other's run;
    the slots not handed over wake held rows as the trigger would, and NOTIFY their queues. Each
    row is written once instead of three times (woken, parked again or leased by ``claim_flow``).
    A holder count never grows: a key gets back at most the slots it gave up in this transaction.
    """
    s, tasks = n.q_schema, n.tasks
    return f"""
        CREATE OR REPLACE FUNCTION {s}.{HAND_OVER_FN}(p_keys text[], p_queues text[], p_wanted integer,
                                                      p_lease double precision, p_worker text)
        RETURNS SETOF {tasks} LANGUAGE plpgsql AS $$
        DECLARE
            f record;
            v_taken integer := 0;
            v_got integer;
            v_share integer;
            v_queue text;
        BEGIN
            FOR f IN SELECT k.key, count(*)::integer AS n FROM unnest(p_keys) AS k(key) GROUP BY k.key ORDER BY k.key
            LOOP
                PERFORM pg_advisory_xact_lock_shared({_key_lock(n, "f.key")});
                v_got := 0;
                -- at most a claim's share of the limit (omniq.flow_control.claim_share)
                SELECT CASE WHEN limit_concurrency >= 4 THEN (limit_concurrency + 1) / 2 ELSE limit_concurrency END
                  INTO v_share
                  FROM {tasks} WHERE limit_key = f.key AND status = 'pending' AND held
                 ORDER BY priority DESC, created_at, seq LIMIT 1;
                IF v_taken < p_wanted AND v_share IS NOT NULL THEN
                    RETURN QUERY UPDATE {tasks} AS t SET {_CLAIM_SET}
                     WHERE t.id IN (SELECT id FROM {tasks}
                                     WHERE limit_key = f.key AND status = 'pending' AND held AND limit_rate IS NULL
                                       AND queue = ANY (p_queues) AND NOT paused
                                       AND queue NOT IN (SELECT queue FROM {s}.{PAUSED_TABLE})
                                     ORDER BY priority DESC, created_at, seq
                                     LIMIT least(f.n, p_wanted - v_taken, v_share)
                                       FOR UPDATE SKIP LOCKED)
                    RETURNING t.*;
                    GET DIAGNOSTICS v_got = ROW_COUNT;
                    v_taken := v_taken + v_got;
                END IF;
                FOR v_queue IN
                    UPDATE {tasks} AS t SET held = NULL, eta = NULL, ready_at = least(t.created_at, now()),
                                            updated_at = now()
                     WHERE t.id IN (SELECT id FROM {tasks}
                                     WHERE limit_key = f.key AND status = 'pending' AND held
                                     ORDER BY priority DESC, created_at, seq
                                     LIMIT f.n - v_got
                                       FOR UPDATE SKIP LOCKED)
                    RETURNING t.queue
                LOOP
                    PERFORM pg_notify({_literal(n.tasks_channel)}, v_queue);
                END LOOP;
            END LOOP;
        END $$"""


def claim_flow_function(n: Names) -> str:
    """``claim_flow()``: ready rows in claim order, in rounds, each limited row admitted under its key's lock.

    A parked row leaves the ready set, so a round of parked rows is followed by another. Per call,
    a key's holders are counted once and kept in step as rows are admitted (the admitted rows are
    leased with the unlimited ones, in one UPDATE per round); a key found full has all its ready
    rows in the queues parked by one UPDATE, not one by one. Migration 5 created it; migration 8
    replaces an older body with this one.
    """
    s, tasks = n.q_schema, n.tasks
    lock = _key_lock(n, "c.limit_key")
    claim = _CLAIM_SET
    return f"""
        CREATE OR REPLACE FUNCTION {s}.{CLAIM_FLOW_FN}(p_queues text[], p_wanted integer, p_lease double precision,
                                                       p_worker text)
        RETURNS SETOF {tasks} LANGUAGE plpgsql AS $$
        DECLARE
            c record;
            v_now double precision := extract(epoch FROM now());
            v_taken integer := 0;
            v_examined integer := 0;
            v_skipped text[] := '{{}}';
            v_free text[];
            v_seen boolean;
            v_keys text[] := '{{}}';  -- keys whose holders this call counted
            v_counts integer[] := '{{}}';  -- their holders, with the rows this call admitted
            v_firsts timestamptz[] := '{{}}';  -- their earliest lease deadline
            v_full text[] := '{{}}';  -- keys found full: their ready rows are parked
            v_i integer;
            v_holders integer;
            v_earliest timestamptz;
            v_tat double precision;
            v_start double precision;
            v_allowed double precision;
        BEGIN
            LOOP
                v_seen := false;
                v_free := '{{}}';
                FOR c IN
                    SELECT x.id, x.limit_key, x.limit_concurrency, x.limit_rate, x.limit_burst, x.rate_reserved
                      FROM unnest(p_queues) AS q(queue),
                           LATERAL (SELECT id, priority, ready_at, seq, limit_key, limit_concurrency, limit_rate,
                                           limit_burst, rate_reserved
                                      FROM {tasks}
                                     WHERE hashtext(queue) = hashtext(q.queue) AND queue = q.queue
                                       AND status = 'pending' AND NOT paused AND ready_at <= now()
                                       AND id <> ALL (v_skipped)
                                     ORDER BY priority DESC, ready_at, seq
                                     LIMIT p_wanted - v_taken
                                       FOR UPDATE SKIP LOCKED) AS x
                     ORDER BY x.priority DESC, x.ready_at, x.seq
                     LIMIT p_wanted - v_taken
                LOOP
                    v_seen := true;
                    v_examined := v_examined + 1;
                    IF c.limit_key IS NULL THEN
                        v_free := v_free || c.id;
                        v_taken := v_taken + 1;
                        CONTINUE;
                    END IF;
                    v_i := array_position(v_keys, c.limit_key);
                    IF c.limit_key = ANY (v_full) AND c.limit_concurrency <= v_counts[v_i] THEN
                        CONTINUE;  -- parked with its key's other ready rows (this loop read it before)
                    END IF;
                    IF v_i IS NULL AND NOT pg_try_advisory_xact_lock({lock}) THEN
                        v_skipped := v_skipped || c.id;  -- another claimer is admitting this key
                        CONTINUE;
                    END IF;
                    IF c.limit_concurrency IS NOT NULL THEN
                        IF v_i IS NULL THEN
                            SELECT count(*)::integer, min(lease_expires_at) INTO v_holders, v_earliest
                              FROM {tasks}
                             WHERE limit_key = c.limit_key AND status = 'running'
                               AND limit_concurrency IS NOT NULL AND lease_expires_at > now();
                            v_keys := v_keys || c.limit_key;
                            v_counts := v_counts || v_holders;
                            v_firsts := v_firsts || v_earliest;
                            v_i := cardinality(v_keys);
                        END IF;
                        IF v_counts[v_i] >= c.limit_concurrency THEN
                            UPDATE {tasks} SET held = true, rate_reserved = NULL, eta = coalesce(v_firsts[v_i], now()),
                                               ready_at = coalesce(v_firsts[v_i], now()), updated_at = now()
                             WHERE id IN (SELECT id FROM {tasks}
                                           WHERE queue = ANY (p_queues) AND status = 'pending' AND NOT paused
                                             AND limit_key = c.limit_key AND ready_at <= now()
                                             AND limit_concurrency <= v_counts[v_i]
                                             AND id <> ALL (v_free)  -- admitted this round
                                             FOR UPDATE SKIP LOCKED);
                            v_full := v_full || c.limit_key;
                            CONTINUE;
                        END IF;
                    ELSIF v_i IS NULL THEN
                        v_keys := v_keys || c.limit_key;  -- locked: the key's next rows need not lock again
                        v_counts := v_counts || 0;
                        v_firsts := v_firsts || NULL::timestamptz;
                    END IF;
                    IF c.limit_rate IS NOT NULL AND c.rate_reserved IS NOT TRUE THEN
                        SELECT k.tat INTO v_tat FROM {s}.{FLOW_KEYS_TABLE} AS k WHERE k.key = c.limit_key;
                        v_start := greatest(coalesce(v_tat, v_now), v_now);
                        v_allowed := v_start - (c.limit_burst - 1) / c.limit_rate;
                        INSERT INTO {s}.{FLOW_KEYS_TABLE} AS k (key, tat)
                             VALUES (c.limit_key, v_start + 1.0 / c.limit_rate)
                        ON CONFLICT (key) DO UPDATE SET tat = EXCLUDED.tat;
                        IF v_now < v_allowed - {_SLACK} THEN
                            UPDATE {tasks} SET held = NULL, rate_reserved = true, eta = to_timestamp(v_allowed),
                                               ready_at = to_timestamp(v_allowed), updated_at = now()
                             WHERE id = c.id;
                            CONTINUE;
                        END IF;
                    END IF;
                    IF c.limit_concurrency IS NOT NULL THEN  -- a holder from now on: the key's next rows count it
                        v_counts[v_i] := v_counts[v_i] + 1;
                        v_firsts[v_i] := coalesce(v_firsts[v_i], now() + p_lease * interval '1 second');
                    END IF;
                    v_free := v_free || c.id;
                    v_taken := v_taken + 1;
                END LOOP;
                IF cardinality(v_free) > 0 THEN
                    RETURN QUERY UPDATE {tasks} AS t SET {claim} WHERE t.id = ANY (v_free) RETURNING t.*;
                END IF;
                EXIT WHEN NOT v_seen OR v_taken >= p_wanted OR v_examined >= {_EXAMINED};
            END LOOP;
        END $$"""


class QueuePauses:
    """``set_queue_paused`` and ``paused_queues`` on one schema's ``paused_queues`` table.

    Args:
        names: the schema's names.
        connection: the task queue's pool connection.
    """

    def __init__(self, names: Names, connection: Connection[asyncpg.Pool]) -> None:
        paused = f"{names.q_schema}.{PAUSED_TABLE}"
        self._connection = connection
        self._pause = f"INSERT INTO {paused} (queue) VALUES ($1) ON CONFLICT (queue) DO NOTHING"
        # A resume wakes the queue's idle workers, as an enqueue does (on commit).
        self._resume = f"""
            WITH d AS (DELETE FROM {paused} WHERE queue = $1 RETURNING queue)
            SELECT count(pg_notify({_literal(names.tasks_channel)}, d.queue)) FROM d"""
        self._list = f"SELECT queue FROM {paused} ORDER BY queue"

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause ``queue`` (one INSERT) or resume it (one DELETE that NOTIFYs); idempotent."""
        pool = await self._connection.client()
        with self._connection.errors():
            await pool.execute(self._pause if paused else self._resume, queue)

    async def names(self) -> list[str]:
        """The paused queues, sorted."""
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(self._list)
        return [row[0] for row in rows]
