"""Defaults shared by the core and the backends."""

from __future__ import annotations

#: directory of local data (SQLite file, file backend root) when settings do not name one.
DEFAULT_BASE_DIR = ".omniq"
#: queue used when none is given.
DEFAULT_QUEUE = "default"
#: prefix of keys, subjects, streams and table schemas (Settings.key_prefix overrides it).
DEFAULT_PREFIX = "omniq"
#: how long a worker waits between dependency checks of a task whose dependencies are not done.
DEPENDENCY_RECHECK_SECONDS = 0.5
#: events buffered before a flush is forced (they are also flushed every EVENT_FLUSH_SECONDS).
EVENT_BATCH_SIZE = 512
#: longest time an event waits in the buffer.
EVENT_FLUSH_SECONDS = 0.25
#: how often get_result(wait=True) re-reads the task queue, so a finished task whose result
#: was never written (its worker died between the two steps) cannot make a waiter wait forever.
RESULT_WAIT_RECHECK_SECONDS = 1.0
#: how long get_result(wait=True), finding a SUCCEEDED record without a stored result, still waits
#: for the value (the worker writes it right after the queue's finish) before it gives up on it.
RESULT_WRITE_GRACE_SECONDS = 2.0
#: how often a worker deletes expired results and events (engines with native TTLs make this cheap).
HOUSEKEEPING_SECONDS = 60.0
#: the largest duration (seconds) a stored task may carry (timeout, interval, result ttl): a century.
#: Well inside what ``now + timedelta`` can represent (year 9999), so no stored value can overflow it.
MAX_DURATION_SECONDS = 100 * 365.25 * 86400
