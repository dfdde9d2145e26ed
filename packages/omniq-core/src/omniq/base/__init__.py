"""The contract: what a task queue, a result storage and an event storage do.

These three abstract classes are the whole interface a backend implements:
:class:`BaseTaskQueue` (``omniq.base.task_queue``), :class:`BaseResultStorage` and
:class:`BaseEventStorage` (``omniq.base.storage``), on :class:`Component`'s life cycle.
They are written against five engines at once (Redis, PostgreSQL, SQLite,
NATS JetStream, files), so every method is *batch-shaped*: a worker claims
up to N tasks, extends all its leases, and finishes a batch of outcomes in
one call, and each engine can do that in one round trip with its own fast
primitive (a Lua script, ``UPDATE ... FOR UPDATE SKIP LOCKED``, ``BEGIN
IMMEDIATE``, a JetStream pull fetch, an atomic rename).

The lease state machine, shared by every engine:

* **claim** a PENDING, unpaused task whose ``eta`` has passed: status
  RUNNING, ``attempts += 1``, a fresh ``lease_token``, ``lease_expires_at``
  = engine clock + lease, ``started_at`` and ``worker_id`` set; atomically,
  for the whole batch; no task is ever handed to two claimers.
* **extend** (heartbeat): push ``lease_expires_at`` forward where id and token
  still match.
* **finish**: apply an :class:`~omniq.models.Outcome` where id and token still
  match; a mismatch means the lease was lost and nothing is recorded.
* **recover**: RUNNING tasks whose own ``lease_expires_at`` is past (engine
  clock) go back to PENDING, or to FAILED with a ``LeaseExpired`` error when
  their attempts are used up. No table of live workers is consulted.

See ``docs/backends.md`` for the guide to writing a backend.
"""

from __future__ import annotations

from omniq._records import (
    CorruptTask,
    claimed_task,
    decode_error,
    from_row,
    json_decoder,
    msgpack_decoder,
    salvage_blob,
    salvage_task,
    task_from_row,
)
from omniq.base.component import Component
from omniq.base.storage import BaseEventStorage, BaseResultStorage
from omniq.base.task_queue import BaseTaskQueue, claim_after_finish, claim_after_finish_failed
from omniq.capabilities import Capability
from omniq.connection import CONNECTION_ERRORS, map_exceptions
from omniq.lease import apply_outcome, lease_expired_error

__all__ = [
    "BaseEventStorage",
    "apply_outcome",
    "BaseResultStorage",
    "BaseTaskQueue",
    "Capability",
    "Component",
    "CONNECTION_ERRORS",
    "CorruptTask",
    "claim_after_finish",
    "claim_after_finish_failed",
    "claimed_task",
    "decode_error",
    "from_row",
    "json_decoder",
    "lease_expired_error",
    "map_exceptions",
    "msgpack_decoder",
    "salvage_blob",
    "salvage_task",
    "task_from_row",
]
