"""Every table, index, channel and lock name, the DDL, and versioned migrations.

All objects live in one PostgreSQL schema (``omniq`` by default, configurable
per component so tests and tenants stay apart). Each component migrates the
schema when it connects; concurrent starters serialise on a transaction-level
advisory lock, and the fast path (schema already current) takes no lock.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING

from omniq.constants import DEFAULT_PREFIX
from omniq.errors import ConfigurationError
from omniq_postgres.dependencies import dependency_migration, generation_migration
from omniq_postgres.flow import claim_flow_function, flow_migration, hand_over_function, slot_freed_trigger

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "DEFAULT_SCHEMA",
    "EVENTS_TABLE",
    "MIGRATIONS",
    "RESULTS_TABLE",
    "TASKS_TABLE",
    "VERSION_TABLE",
    "WORKERS_TABLE",
    "Names",
    "migrate",
]

logger = logging.getLogger("omniq.postgres")

DEFAULT_SCHEMA = DEFAULT_PREFIX  # schema used when neither the options nor settings (key_prefix) name one
TASKS_TABLE = "tasks"  # one row per task; claim, lease and outcome state live here
RESULTS_TABLE = "results"  # final result of each task, with its own expiry
EVENTS_TABLE = "events"  # append-only task history
VERSION_TABLE = "schema_version"  # one row per applied migration
WORKERS_TABLE = "workers"  # the worker registry: one row per live worker process, with its expiry (migration 4)
CLAIM_INDEX = "tasks_claim_idx"  # pending tasks in claim order (SKIP LOCKED claims; counts of pending tasks)
UNIQUE_INDEX = "tasks_unique_key_idx"  # one PENDING/RUNNING task per unique_key
DUE_INDEX = "tasks_due_idx"  # earliest ready_at per queue (migration 1; dropped by 2: next_due uses CLAIM_INDEX)
LEASE_INDEX = "tasks_lease_idx"  # RUNNING tasks by lease deadline, for recover()
STATUS_INDEX = "tasks_status_queue_idx"  # count()/list()/purge() filters on the other statuses (from migration 3)
RESULTS_EXPIRY_INDEX = "results_expires_idx"  # purge of expired results
EVENTS_TASK_INDEX = "events_task_idx"  # query(task_id=...) (a hash index from migration 3)
EVENTS_TS_INDEX = "events_ts_idx"  # query by time and purge(before)
WORKERS_EXPIRY_INDEX = "workers_expires_idx"  # the registry's cleanup of expired workers
NOTIFY_TASKS_FN = "notify_tasks_inserted"  # statement trigger fn: NOTIFY each queue that got pending rows (to 3)
NOTIFY_REQUEUE_FN = "notify_task_requeued"  # row trigger fn: NOTIFY a queue when a task becomes claimable again
NOTIFY_RESULTS_FN = "notify_results_written"  # statement trigger fn: NOTIFY each task id whose result was written
TASKS_CHANNEL_SUFFIX = "tasks"  # LISTEN channel "<schema>.tasks"; payload = queue name
RESULTS_CHANNEL_SUFFIX = "results"  # LISTEN channel "<schema>.results"; payload = task id
SEQ_BLOCK = 1 << 20  # tasks.seq / events.id values one INSERT reserves with one nextval (migration 3)
ADVISORY_LOCK_CLASS = 0x6F6D6E71  # first key of pg_advisory_xact_lock(int, int) ("omnq"); second = schema hash

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MAX_CHANNEL = 63  # NAMEDATALEN - 1: LISTEN truncates longer names, pg_notify rejects them


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _channel(schema: str, suffix: str) -> str:
    name = f"{schema}.{suffix}"
    if len(name) <= _MAX_CHANNEL:
        return name
    digest = hashlib.sha1(schema.encode()).hexdigest()[:12]
    return f"{schema[: _MAX_CHANNEL - len(suffix) - 14]}~{digest}.{suffix}"


class Names:
    """Schema-qualified, quoted names for one schema (validated once)."""

    def __init__(self, schema: str = DEFAULT_SCHEMA) -> None:
        if not _IDENTIFIER.match(schema):
            raise ConfigurationError(
                f"schema={schema!r} is not valid: expected a PostgreSQL identifier "
                "(letters, digits, underscores, not starting with a digit, at most 63 characters)"
            )
        self.schema = schema
        self.q_schema = _quote(schema)
        self.tasks = f"{self.q_schema}.{TASKS_TABLE}"
        self.results = f"{self.q_schema}.{RESULTS_TABLE}"
        self.events = f"{self.q_schema}.{EVENTS_TABLE}"
        self.version = f"{self.q_schema}.{VERSION_TABLE}"
        self.workers = f"{self.q_schema}.{WORKERS_TABLE}"
        self.tasks_channel = _channel(schema, TASKS_CHANNEL_SUFFIX)
        self.results_channel = _channel(schema, RESULTS_CHANNEL_SUFFIX)
        self.lock_key = int.from_bytes(hashlib.sha1(schema.encode()).digest()[:4], "big", signed=True)

    def __repr__(self) -> str:
        return f"Names(schema={self.schema!r})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _migration_1(n: Names) -> list[str]:
    s = n.q_schema
    return [
        f"""
        CREATE TABLE {n.tasks} (
            id               text PRIMARY KEY,
            seq              bigint GENERATED ALWAYS AS IDENTITY,
            func             text NOT NULL,
            payload          bytea NOT NULL DEFAULT '',
            queue            text NOT NULL,
            priority         integer NOT NULL DEFAULT 0,
            unique_key       text,
            status           text NOT NULL CHECK (status IN
                                 ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'expired')),
            eta              timestamptz,
            ready_at         timestamptz NOT NULL,
            interval_seconds double precision,
            cron             text,
            paused           boolean NOT NULL DEFAULT false,
            attempts         integer NOT NULL DEFAULT 0,
            max_retries      integer NOT NULL DEFAULT 0,
            timeout          double precision,
            expires_at       timestamptz,
            result_ttl       double precision,
            depends_on       jsonb NOT NULL DEFAULT '[]',
            created_at       timestamptz NOT NULL,
            updated_at       timestamptz,
            started_at       timestamptz,
            finished_at      timestamptz,
            lease_token      text,
            lease_expires_at timestamptz,
            worker_id        text,
            error            jsonb
        )""",
        f"""CREATE INDEX {CLAIM_INDEX} ON {n.tasks} (queue, priority DESC, ready_at, seq)
            WHERE status = 'pending' AND NOT paused""",
        f"""CREATE UNIQUE INDEX {UNIQUE_INDEX} ON {n.tasks} (unique_key)
            WHERE unique_key IS NOT NULL AND status IN ('pending', 'running')""",
        f"CREATE INDEX {DUE_INDEX} ON {n.tasks} (queue, ready_at) WHERE status = 'pending' AND NOT paused",
        f"CREATE INDEX {LEASE_INDEX} ON {n.tasks} (lease_expires_at) WHERE status = 'running'",
        f"CREATE INDEX {STATUS_INDEX} ON {n.tasks} (status, queue)",
        f"""
        CREATE TABLE {n.results} (
            task_id     text PRIMARY KEY,
            status      text NOT NULL,
            payload     bytea NOT NULL DEFAULT '',
            error       jsonb,
            attempts    integer NOT NULL DEFAULT 0,
            func        text NOT NULL DEFAULT '',
            queue       text NOT NULL DEFAULT 'default',
            started_at  timestamptz,
            finished_at timestamptz NOT NULL,
            expires_at  timestamptz
        )""",
        f"CREATE INDEX {RESULTS_EXPIRY_INDEX} ON {n.results} (expires_at) WHERE expires_at IS NOT NULL",
        f"""
        CREATE TABLE {n.events} (
            id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            task_id   text NOT NULL,
            type      text NOT NULL,
            ts        timestamptz NOT NULL,
            queue     text NOT NULL DEFAULT 'default',
            func      text NOT NULL DEFAULT '',
            attempt   integer NOT NULL DEFAULT 0,
            worker_id text,
            message   text NOT NULL DEFAULT ''
        )""",
        f"CREATE INDEX {EVENTS_TASK_INDEX} ON {n.events} (task_id, ts, id)",
        f"CREATE INDEX {EVENTS_TS_INDEX} ON {n.events} (ts, id)",
        # Wake-ups are triggers so every writer (bulk enqueue, a caller's own
        # transaction, plain SQL) notifies, and only when the transaction commits.
        f"""
        CREATE FUNCTION {s}.{NOTIFY_TASKS_FN}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(TG_ARGV[0], q.queue)
               FROM (SELECT DISTINCT queue FROM new_rows WHERE status = 'pending' AND NOT paused) AS q;
            RETURN NULL;
        END $$""",
        f"""CREATE TRIGGER tasks_inserted AFTER INSERT ON {n.tasks}
            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
            EXECUTE FUNCTION {s}.{NOTIFY_TASKS_FN}({_literal(n.tasks_channel)})""",
        f"""
        CREATE FUNCTION {s}.{NOTIFY_REQUEUE_FN}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(TG_ARGV[0], NEW.queue);
            RETURN NULL;
        END $$""",
        f"""CREATE TRIGGER tasks_requeued AFTER UPDATE ON {n.tasks} FOR EACH ROW
            WHEN (NEW.status = 'pending' AND NOT NEW.paused AND (OLD.status <> 'pending' OR OLD.paused))
            EXECUTE FUNCTION {s}.{NOTIFY_REQUEUE_FN}({_literal(n.tasks_channel)})""",
        f"""
        CREATE FUNCTION {s}.{NOTIFY_RESULTS_FN}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(TG_ARGV[0], r.task_id) FROM new_rows AS r;
            RETURN NULL;
        END $$""",
        f"""CREATE TRIGGER results_inserted AFTER INSERT ON {n.results}
            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
            EXECUTE FUNCTION {s}.{NOTIFY_RESULTS_FN}({_literal(n.results_channel)})""",
        f"""CREATE TRIGGER results_updated AFTER UPDATE ON {n.results}
            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
            EXECUTE FUNCTION {s}.{NOTIFY_RESULTS_FN}({_literal(n.results_channel)})""",
    ]


def _migration_2(n: Names) -> list[str]:
    # Every enqueue paid for a fourth index entry that only the idle worker's "when is the
    # next task due" query used; that query now walks tasks_claim_idx once per priority.
    return [f"DROP INDEX IF EXISTS {n.q_schema}.{DUE_INDEX}"]


def _migration_3(n: Names) -> list[str]:
    # Index entries are most of an enqueue's server work. A new (pending) task now gets two
    # (primary key, claim index) instead of three: the status index leaves pending tasks to the
    # claim index, which keeps paused ones too (as its second column, so a claim still reads
    # unpaused tasks in order without skipping any). An event gets two instead of three: nothing
    # looks events up by id; the id only orders ties, through the other two indexes.
    s = n.q_schema
    return [
        f"DROP INDEX IF EXISTS {s}.{STATUS_INDEX}",
        f"CREATE INDEX {STATUS_INDEX} ON {n.tasks} (status, queue) WHERE status <> 'pending'",
        f"DROP INDEX IF EXISTS {s}.{CLAIM_INDEX}",
        # Keyed on the queue's hash, not its text: with a fixed-width first column btree caches
        # where each later column starts, and an insert (whose key differs from its neighbours
        # only in seq) compares five columns many times. Queries add "queue = ..." for collisions,
        # which the included queue answers without the table (index-only counts, next_due).
        f"""CREATE INDEX {CLAIM_INDEX} ON {n.tasks} (hashtext(queue), paused, priority DESC, ready_at, seq)
            INCLUDE (queue) WHERE status = 'pending'""",
        f"ALTER TABLE {n.events} DROP CONSTRAINT IF EXISTS {EVENTS_TABLE}_pkey",
        # Events are looked up by task only by equality (a task's few events are then sorted):
        # a hash index entry is the 4-byte hash, not the 33-byte id plus (ts, id), and costs
        # about half as much to insert.
        f"DROP INDEX IF EXISTS {s}.{EVENTS_TASK_INDEX}",
        f"CREATE INDEX {EVENTS_TASK_INDEX} ON {n.events} USING hash (task_id)",
        # An enqueue statement reserves a block of seq values with one nextval and numbers its rows
        # inside it (see omniq_postgres.enqueue._render_insert); a per-row nextval costs more than an index entry.
        f"ALTER TABLE {n.tasks} ALTER COLUMN seq SET INCREMENT BY {SEQ_BLOCK}",
        f"ALTER TABLE {n.events} ALTER COLUMN id SET INCREMENT BY {SEQ_BLOCK}",
        # The enqueue statement NOTIFYs its queues itself: the statement trigger copied every new
        # row into a transition table only to find them.
        f"DROP TRIGGER IF EXISTS tasks_inserted ON {n.tasks}",
        f"DROP FUNCTION IF EXISTS {s}.{NOTIFY_TASKS_FN}()",
    ]


def _migration_4(n: Names) -> list[str]:
    # The operations (issue 15): task headers (small string metadata such as a W3C traceparent,
    # NULL for a task without) and the worker registry. No index on created_at for pages of tasks:
    # every claim and finish is a non-HOT update, so it would take an entry per insert, claim and
    # finish (measured: +13 % WAL per task on enqueue and drain) for the operator's pages alone.
    return [
        f"ALTER TABLE {n.tasks} ADD COLUMN IF NOT EXISTS headers jsonb",
        f"""
        CREATE TABLE IF NOT EXISTS {n.workers} (
            id         text PRIMARY KEY,
            info       jsonb NOT NULL,
            started_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL
        )""",
        f"CREATE INDEX IF NOT EXISTS {WORKERS_EXPIRY_INDEX} ON {n.workers} (expires_at)",
    ]


def _migration_5(n: Names) -> list[str]:
    # Flow control (issue 17): limit columns, NULL for an unlimited task, the partial indexes and
    # tables of omniq_postgres.flow, its claim function and the trigger that frees a slot.
    return flow_migration(n)


def _migration_6(n: Names) -> list[str]:
    # Dependencies in the engine (issue 18): the waiting count and dependants flag columns, the
    # dependants table and the release function of omniq_postgres.dependencies.
    return dependency_migration(n)


def _migration_7(n: Names) -> list[str]:
    # Dependencies: registrations name their dependant's seq, so the end of a dependency no longer
    # reads each dependant's depends_on list (a fan-in's cost was quadratic in its size).
    return generation_migration(n)


def _migration_8(n: Names) -> list[str]:
    # Flow control: claim_flow() counts a key's holders once per call, leases admitted rows in one
    # UPDATE per round and parks a full key's ready rows in one UPDATE (fresh schemas have it from 5).
    return [claim_flow_function(n)]


def _migration_9(n: Names) -> list[str]:
    # Flow control: a finish that claims hands the slots it frees to held tasks (hand_over()), and
    # the slot-freed trigger does not fire in its transaction (omniq.handover set).
    return [
        f"DROP TRIGGER IF EXISTS tasks_slot_freed ON {n.tasks}",
        slot_freed_trigger(n, handover=True),
        hand_over_function(n),
    ]


#: (version, builder of its statements); append only, never edit a released entry.
MIGRATIONS = (
    (1, _migration_1),
    (2, _migration_2),
    (3, _migration_3),
    (4, _migration_4),
    (5, _migration_5),
    (6, _migration_6),
    (7, _migration_7),
    (8, _migration_8),
    (9, _migration_9),
)
LATEST_VERSION = MIGRATIONS[-1][0]


async def current_version(conn: asyncpg.Connection, names: Names) -> int:
    """Return the newest applied migration (0 when the schema is empty or missing)."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{names.q_schema}.{VERSION_TABLE}")
    if not exists:
        return 0
    version = await conn.fetchval(f"SELECT max(version) FROM {names.version}")
    return int(version or 0)


async def migrate(conn: asyncpg.Connection, names: Names) -> int:
    """Bring the schema up to :data:`LATEST_VERSION`; safe from many processes at once.

    Returns:
        the number of migrations this call applied.
    """
    if await current_version(conn, names) >= LATEST_VERSION:
        return 0
    async with conn.transaction():
        # Serialise concurrent starters; the lock ends with the transaction.
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", ADVISORY_LOCK_CLASS, names.lock_key)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {names.q_schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {names.version} (
                    version    integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        version = await current_version(conn, names)
        applied = 0
        for number, build in MIGRATIONS:
            if number <= version:
                continue
            for statement in build(names):
                await conn.execute(statement)
            await conn.execute(f"INSERT INTO {names.version} (version) VALUES ($1)", number)
            applied += 1
            logger.info("applied omniq schema migration %d to schema %s", number, names.schema)
    return applied
