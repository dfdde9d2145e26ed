"""Every Redis key, field and channel name the backend uses.

Layout, for prefix ``P`` (``Settings.key_prefix``, default :data:`omniq.constants.DEFAULT_PREFIX`) and
queue ``q``. Everything about one queue carries the hash tag ``{P:q}``, so a
queue's keys share one cluster slot. Lookups by task id go through the
global ``{P}:idx`` hash (id -> queue); results and events are keyed by task
id / prefix. Flow control (``{P}:fl:*``) and dependencies (a dependant and
its dependency may live in different queues) reach across queues: the
backend runs on a standalone server.

The Lua scripts (:mod:`omniq_redis.scripts`) build the same names from the
suffixes below, substituted into their source, so this module is the one
place a name is spelt.
"""

from __future__ import annotations

from omniq.errors import ConfigurationError

__all__ = [
    "DONE_TTL",
    "PARK_CAP",
    "SIGNAL_CAP",
    "TASK_FIELDS",
    "QueueKeys",
    "events_key",
    "flow_key",
    "global_key",
    "queue_tag",
    "result_channel",
    "result_index_key",
    "result_key",
]

# -- per-queue keys: "{P:q}:<suffix>" ------------------------------------------------------------

#: zset of claimable tasks; score -priority, member "<time:016><seq:012>:<id>" (ties sort by member).
#: The sequence number orders tasks due in the same microsecond: an enqueueing client's own
#: counter, or SEQ for a task the server requeues.
READY = "ready"
#: zset of PENDING tasks whose eta is in the future; score eta (µs), member id.
DELAYED = "delayed"
#: zset of RUNNING tasks; score lease deadline (µs, server clock), member id.
LEASES = "leases"
#: list of wake-up tokens; enqueue pushes, idle workers BLPOP (capped at SIGNAL_CAP).
SIGNAL = "signal"
#: counter giving the sequence number of a READY member built by a script (retry, expired lease).
SEQ = "seq"
#: prefix of the per-status zsets "{P:q}:st:<status>"; score created_at (µs), member id. A task is in
#: exactly one of them; list / count without a status merge them (no all-tasks zset to keep up on
#: every enqueue).
STATUS = "st"
#: prefix of the task hashes "{P:q}:t:<id>" (fields below).
TASK = "t"
#: prefix of the completion counters "{P:q}:done:<minute>" (minute = server µs // 60,000,000): tasks
#: that reached SUCCEEDED or FAILED in that minute, INCRBY'd once per finish batch, expiring after
#: DONE_TTL (queue_stats reads the last hour's).
DONE = "done"
#: prefix of the dependants sets "{P:q}:dep:<id>": "<dependant id>@<its generation>" of the tasks waiting
#: on task <id> of queue q (``Task.waiting``), added by the enqueue that finds <id> stored and not terminal, deleted (after
#: one decrement each) by the step that ends or deletes <id>. It exists only while its task carries
#: the hash field dn, which the finish, cancel, recover and purge scripts read in the HMGET they
#: already do: a task nobody waits on costs them nothing more.
DEPENDANTS = "dep"
#: counter "{P}:depgen": a generation number for each task stored with depends_on (its hash field dg),
#: named in its registrations, so that one left by an earlier task of the same id (ended, then
#: replaced by an enqueue of its id) is told apart from the task stored now and lowers nothing.
DEPENDANT_GENERATION = "depgen"

# -- global keys: "{P}:<suffix>" -------------------------------------------------------------------

#: hash task id -> queue name, to find a task's keys from its id.
INDEX = "idx"
#: hash unique_key -> id of the PENDING/RUNNING task holding it.
UNIQUE = "uniq"
#: hash worker id -> msgpack WorkerInfo of the registered workers.
WORKERS = "workers"
#: zset worker id -> expiry (µs, server clock); list_workers drops the expired entries.
WORKER_EXPIRY = "workers:exp"
#: set of queue names ever used (list/count/purge/recover iterate it); added by the enqueue that
#: takes the queue's first SEQ number, so neither key is ever deleted (purge keeps both).
QUEUES = "queues"
#: set of paused queue names (``set_queue_paused``); the claim script checks it (SISMEMBER).
PAUSED = "paused"
#: prefix of the flow-control keys of a limit key k (``Limits.key``), shared by every queue:
#: "{P}:fl:h:<k>" zset of holders (RUNNING concurrency-limited tasks; score lease deadline µs,
#: member id), "{P}:fl:w:<k>" zset of tasks held for a slot (score -priority, member their READY
#: member: claim order), "{P}:fl:t:<k>" the rate's theoretical arrival time (µs, expiring once past).
FLOW = "fl"

# -- results and events: "P:<suffix>" (no hash tag: spread by task id) ------------------------------

#: result blobs "P:r:<id>" (encode_result), expiring at the result's expires_at (PXAT).
RESULT = "r"
#: zset of stored results; score expires_at (ms) or +inf, member id (purge without SCAN).
RESULT_INDEX = "results"
#: pub/sub channel "P:rn:<id>" published when the result of <id> is stored.
RESULT_CHANNEL = "rn"
#: stream of events; entry id ~ event timestamp (ms), field "d" = msgpack TaskEvent.
EVENTS = "events"

# -- task hash fields ------------------------------------------------------------------------------

#: fields of a task hash returned to Python, in this order, by every script that returns a task.
#: b = encode_task blob as enqueued; the others override its mutable fields ("" means None,
#: a missing field keeps the blob's value): s status, e eta µs, p paused "1"/"0", a attempts,
#: k lease token, l lease deadline µs, w worker id, sa started_at µs, fa finished_at µs,
#: ua updated_at µs, er msgpack TaskError, wt how many dependencies it still waits on (Task.waiting;
#: set only for a task enqueued with some, absent meaning 0).
TASK_FIELDS = ("b", "s", "e", "p", "a", "k", "l", "w", "sa", "fa", "ua", "er", "wt")
# Index fields only the scripts read: c created_at µs, pr priority, mr max_retries,
# uk unique key, rm the task's member in READY. A task with limits (and only such a task) also has
# lk its Limits.key, lc concurrency, lr rate per second, lb burst ('' for None), and while parked
# by flow control hd "1" (held for a concurrency slot) or rr "1" (its rate slot is reserved). A task
# some other task waits on has dn "1" (its DEPENDANTS set exists) until it ends or is deleted; a task
# stored with depends_on has dg, its generation (DEPENDANT_GENERATION).

#: seconds a completion counter lives: the hour queue_stats shows, and a margin.
DONE_TTL = 3900

#: most wake-up tokens kept in a SIGNAL list (a burst wakes at most this many idle workers).
SIGNAL_CAP = 64

#: most limited tasks one claim script call parks (bounds how long one call blocks the server).
PARK_CAP = 1000


def _check_name(kind: str, name: str) -> str:
    if not name or "{" in name or "}" in name:
        raise ConfigurationError(f"{kind} {name!r} is not valid for Redis: it must be non-empty without braces")
    return name


def queue_tag(prefix: str, queue: str) -> str:
    """Return the hash-tagged base ``{P:q}`` of a queue's keys."""
    return "{" + prefix + ":" + _check_name("queue name", queue) + "}"


def global_key(prefix: str, suffix: str) -> str:
    """Return a global key ``{P}:<suffix>`` (INDEX, UNIQUE, QUEUES, WORKERS...)."""
    return "{" + prefix + "}:" + suffix


def flow_key(prefix: str, kind: str, limit_key: str) -> str:
    """Return a flow-control key ``{P}:fl:<kind>:<limit key>`` (kind ``h``, ``w`` or ``t``, see FLOW)."""
    return global_key(prefix, f"{FLOW}:{kind}:{limit_key}")


def result_key(prefix: str, task_id: str) -> str:
    """Return the key of a task's result."""
    return f"{prefix}:{RESULT}:{task_id}"


def result_index_key(prefix: str) -> str:
    """Return the key of the result index zset."""
    return f"{prefix}:{RESULT_INDEX}"


def result_channel(prefix: str, task_id: str) -> str:
    """Return the pub/sub channel announcing a task's result."""
    return f"{prefix}:{RESULT_CHANNEL}:{task_id}"


def events_key(prefix: str) -> str:
    """Return the key of the event stream."""
    return f"{prefix}:{EVENTS}"


class QueueKeys:
    """The keys of one queue, built once per queue name."""

    __slots__ = ("delayed", "leases", "pending", "ready", "seq", "signal", "tag")

    def __init__(self, prefix: str, queue: str) -> None:
        self.tag = queue_tag(prefix, queue)
        self.ready = f"{self.tag}:{READY}"
        self.delayed = f"{self.tag}:{DELAYED}"
        self.leases = f"{self.tag}:{LEASES}"
        self.signal = f"{self.tag}:{SIGNAL}"
        self.seq = f"{self.tag}:{SEQ}"
        self.pending = self.status("pending")

    def status(self, status: str) -> str:
        """Return the per-status zset ``{P:q}:st:<status>``."""
        return f"{self.tag}:{STATUS}:{status}"

    def task(self, task_id: str) -> str:
        """Return the hash of one task."""
        return f"{self.tag}:{TASK}:{task_id}"


def validate_prefix(prefix: str) -> str:
    """Check a key prefix (no braces: they would break the hash tags)."""
    return _check_name("key prefix", prefix)
