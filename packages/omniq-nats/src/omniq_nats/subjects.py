"""Every stream, subject, bucket and consumer name the NATS backend uses.

All names live under one prefix (``Settings.key_prefix``, ``"omniq"`` by
default), so several deployments or test runs share a server without
touching each other. Names are built from *tokens*: text that is safe as a
subject token, a stream name part and a KV key (see :func:`token`).
"""

from __future__ import annotations

import re

__all__ = [
    "CLOCK_KEY",
    "JS_API",
    "KV_OPERATION",
    "check_prefix",
    "consumer_name",
    "event_subject",
    "events_stream",
    "flow_bucket",
    "held_page",
    "limit_key",
    "kv_stream",
    "kv_subject",
    "lease_subject",
    "lease_subjects",
    "leases_stream",
    "LIMIT_KEYS",
    "PAUSED_KEY",
    "parse_priority",
    "paused_subject",
    "priority_token",
    "results_bucket",
    "revisions_subject",
    "tasks_bucket",
    "token",
    "unique_bucket",
    "work_stream",
    "work_subject",
    "work_subjects",
    "workers_bucket",
]

_SAFE = re.compile(r"[A-Za-z0-9-][A-Za-z0-9_-]*")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

#: subject prefix of JetStream's API.
JS_API = "$JS.API"

#: header JetStream KV puts on delete / purge markers (value "DEL" or "PURGE").
KV_OPERATION = "KV-Operation"


def token(text: str) -> str:
    """Return ``text`` as one subject token / KV key / name part, injectively.

    Plain ids and queue names pass through; anything else (dots, spaces,
    unicode, a leading underscore) becomes ``_`` + its UTF-8 hex.
    """
    if _SAFE.fullmatch(text):
        return text
    return "_" + text.encode().hex()


def check_prefix(prefix: str) -> str:
    """Validate a key prefix (it becomes part of stream names and subjects)."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"prefix={prefix!r} is not valid: expected letters, digits, '-' or '_'")
    return prefix


def priority_token(priority: int) -> str:
    """``p5`` for 5, ``n3`` for -3: one work subject (and consumer) per priority."""
    return f"p{priority}" if priority >= 0 else f"n{-priority}"


def parse_priority(text: str) -> int:
    """Inverse of :func:`priority_token`."""
    return int(text[1:]) if text[0] == "p" else -int(text[1:])


# -- tasks: work-queue stream of tickets -------------------------------------------------------


def work_stream(prefix: str) -> str:
    """Work-queue stream holding one ticket per claimable moment of a task."""
    return f"{prefix}_work"


def work_subjects(prefix: str, queue: str) -> str:
    """Wildcard over every priority subject of one queue (wake-ups, stream info)."""
    return f"{prefix}.work.{token(queue)}.*"


def work_subject(prefix: str, queue: str, priority: int) -> str:
    """Subject a ticket of (queue, priority) is published on."""
    return f"{prefix}.work.{token(queue)}.{priority_token(priority)}"


def revisions_subject(prefix: str, queue: str) -> str:
    """Core NATS subject (no stream) on which enqueues announce the revisions of the records they created."""
    return f"{prefix}.rev.{token(queue)}"


def consumer_name(queue: str, priority: int) -> str:
    """Durable pull consumer of one (queue, priority) work subject (priority token is last, never has ``_``)."""
    return f"{token(queue)}_{priority_token(priority)}"


def tasks_bucket(prefix: str) -> str:
    """KV bucket: task key -> task record (the authoritative state, revision-checked)."""
    return f"{prefix}_tasks"


def unique_bucket(prefix: str) -> str:
    """KV bucket: unique key -> id of the task that last took it."""
    return f"{prefix}_unique"


def workers_bucket(prefix: str) -> str:
    """KV bucket: worker id -> its registration (:mod:`omniq_nats.workers`)."""
    return f"{prefix}_workers"


def leases_stream(prefix: str) -> str:
    """Stream indexing leases by deadline second, so ``recover`` reads only the due ones."""
    return f"{prefix}_leases"


def lease_subjects(prefix: str) -> str:
    """Wildcard over every second of the lease index."""
    return f"{prefix}.lease.*"


def lease_subject(prefix: str, second: int) -> str:
    """Lease index subject of one engine second: ids (one per line) of tasks whose deadline falls in it."""
    return f"{prefix}.lease.{second}"


def flow_bucket(prefix: str) -> str:
    """KV bucket of flow control: per limit key its holders, held tasks and rate state; the paused queues."""
    return f"{prefix}_flow"


def limit_key(key: str) -> str:
    """Flow bucket key of one limit key's state (:class:`omniq_nats.flow.LimitState`)."""
    return f"k.{token(key)}"


def held_page(key: str, page: str) -> str:
    """Flow bucket key of one page of a limit key's held tasks spilled past its state (``LimitState.pages``)."""
    return f"w.{token(key)}.{page}"


def paused_subject(prefix: str) -> str:
    """Core NATS subject (nothing stored) on which a change of the paused queues is announced once written."""
    return f"{prefix}.paused"


#: wildcard (under the flow bucket's subject prefix) over every limit key's state.
LIMIT_KEYS = "k.>"
#: flow bucket key of the set of paused queues (:mod:`omniq_nats.pauses`).
PAUSED_KEY = "paused"

#: KV key of the clock probe in the tasks bucket ("." never occurs in a token, so no task has it).
CLOCK_KEY = "_.clock"


# -- results and events ------------------------------------------------------------------------


def results_bucket(prefix: str) -> str:
    """KV bucket: task key -> encoded TaskResult; bucket max_age = result TTL."""
    return f"{prefix}_results"


def events_stream(prefix: str) -> str:
    """Stream of task events; max_age = event TTL."""
    return f"{prefix}_events"


def event_subject(prefix: str, task_id: str) -> str:
    """Subject of one task's events (query by task = subject filter)."""
    return f"{prefix}.events.{token(task_id)}"


# -- KV layout (JetStream's own convention, so `nats kv` can inspect the buckets) --------------


def kv_stream(bucket: str) -> str:
    """Stream backing a KV bucket."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str) -> str:
    """Subject of one key of a KV bucket."""
    return f"$KV.{bucket}.{key}"
