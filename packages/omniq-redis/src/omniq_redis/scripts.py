"""The Lua scripts: every state change of a task is one of these, atomically.

Each script is loaded once per connection pool (SCRIPT LOAD at connect) and
run with EVALSHA (:class:`omniq_redis.connection.RedisClient` reloads on
NOSCRIPT). Time always comes from the server (``TIME``), in microseconds,
never from a client clock (an enqueueing client's created_at and eta are the
task's own data). ``ARGV[1]`` is the key prefix, and key names come from
:mod:`omniq_redis.keys`, substituted below; the two scripts on the hottest
paths (``enqueue_one``, ``append_events``) take their keys in ``KEYS``
instead, built by the client.

Round trips: enqueue_many, claim (per queue), extend, finish, cancel,
set_paused, set_queue_paused, retry, list_page, queue_stats and the worker registry's calls
are one script call each; a batch spanning several queues runs
one call per queue in one pipeline.
"""

from __future__ import annotations

import hashlib
import re
from string import Template

from omniq_redis import keys
from omniq_redis.lua_common import HELPERS
from omniq_redis.lua_control import CANCEL, GET, PURGE, SET_PAUSED
from omniq_redis.lua_enqueue import ENQUEUE, ENQUEUE_ONE
from omniq_redis.lua_events import APPEND_EVENTS
from omniq_redis.lua_flow import FLOW_HELPERS, SET_QUEUE_PAUSED
from omniq_redis.lua_lease import CLAIM, EXTEND, FINISH, RECOVER
from omniq_redis.lua_operations import LIST_PAGE, QUEUE_STATS, RETRY
from omniq_redis.lua_workers import LIST_WORKERS, REGISTER_WORKER, UNREGISTER_WORKER

__all__ = ["SCRIPTS", "Script"]

_NAMES = {
    "INDEX": keys.INDEX,
    "UNIQUE": keys.UNIQUE,
    "QUEUES": keys.QUEUES,
    "PAUSED": keys.PAUSED,
    "FLOW": keys.FLOW,
    "PARK_CAP": str(keys.PARK_CAP),
    "READY": keys.READY,
    "DELAYED": keys.DELAYED,
    "LEASES": keys.LEASES,
    "SIGNAL": keys.SIGNAL,
    "SEQ": keys.SEQ,
    "STATUS": keys.STATUS,
    "TASK": keys.TASK,
    "DONE": keys.DONE,
    "DEPENDANTS": keys.DEPENDANTS,
    "DEPGEN": keys.DEPENDANT_GENERATION,
    "DONE_TTL": str(keys.DONE_TTL),
    "WORKERS": keys.WORKERS,
    "WORKER_EXPIRY": keys.WORKER_EXPIRY,
    "RESULT": keys.RESULT,
    "RESULT_INDEX": keys.RESULT_INDEX,
    "RESULT_CHANNEL": keys.RESULT_CHANNEL,
    "SIGNAL_CAP": str(keys.SIGNAL_CAP),
    "ROW": ", ".join(f"'{name}'" for name in keys.TASK_FIELDS),
}

_HELPERS = HELPERS + FLOW_HELPERS


def _preamble(body: str) -> str:
    """The helpers ``body`` uses, directly or through another helper, in definition order."""
    wanted: set[str] = set()
    text = body
    while True:
        code_only = re.sub(r"--[^\n]*", "", text)  # a name in a comment is no use
        found = {name for name, _ in _HELPERS if name not in wanted and re.search(rf"\b{name}\b", code_only)}
        if not found:
            break
        wanted |= found
        text = "".join(code for name, code in _HELPERS if name in found)
    return "".join(code for name, code in _HELPERS if name in wanted)


class Script:
    """One Lua script: its source (preamble + body, names substituted) and SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.source = Template(_preamble(body) + body).substitute(_NAMES)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


#: every script by name.
SCRIPTS: dict[str, Script] = {
    name: Script(name, body)
    for name, body in {
        "enqueue": ENQUEUE,
        "enqueue_one": ENQUEUE_ONE,
        "claim": CLAIM,
        "extend": EXTEND,
        "finish": FINISH,
        "recover": RECOVER,
        "cancel": CANCEL,
        "set_paused": SET_PAUSED,
        "set_queue_paused": SET_QUEUE_PAUSED,
        "get": GET,
        "purge": PURGE,
        "append_events": APPEND_EVENTS,
        "list_page": LIST_PAGE,
        "queue_stats": QUEUE_STATS,
        "retry": RETRY,
        "register_worker": REGISTER_WORKER,
        "unregister_worker": UNREGISTER_WORKER,
        "list_workers": LIST_WORKERS,
    }.items()
}
