"""What the task KV bucket stores, and the pure lease-state transitions on it.

A record is the task plus the reply subject of the JetStream delivery that
currently represents it (``ack``): the ticket a worker holds while the task
is RUNNING, or the nak-delayed ticket of a PENDING retry. Acking, naking or
``+WPI``-ing that subject acts on the ticket from any connection, which is
what lets ``recover`` and ``cancel`` release a ticket held by a dead worker.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from omniq.base import apply_outcome, lease_expired_error, msgpack_decoder, salvage_task
from omniq.errors import SerializationError
from omniq.models import Task, TaskStatus, new_id

__all__ = [
    "Record",
    "ack_sequence",
    "apply_outcome",
    "claimed",
    "decode_record",
    "encode_record",
    "expired",
    "leased_record",
]


class Record(msgspec.Struct, array_like=True):
    """One task KV value."""

    task: Task
    #: reply subject of the ticket delivery tied to this state ("" when none is known).
    ack: str = ""


_encoder = msgspec.msgpack.Encoder()
_decode = msgpack_decoder(Record, "task record")


def encode_record(record: Record) -> bytes:
    """Encode a record to MessagePack."""
    return _encoder.encode(record)


def decode_record(data: bytes) -> Record:
    """Decode :func:`encode_record` output, strictly.

    Raises:
        omniq.errors.SerializationError: the bytes are not a record.
    """
    return _decode(data)


def leased_record(data: bytes) -> Record:
    """:func:`decode_record` for a record a claim is about to lease: one whose task fails strict
    decoding comes back salvaged (a CorruptTask the worker fails) instead of raising.

    Raises:
        omniq.errors.SerializationError: not even an ``[task, ack]`` array with the task's id.
    """
    try:
        return _decode(data)
    except SerializationError as exc:
        try:
            raw = msgspec.msgpack.decode(data)
        except msgspec.DecodeError:
            raise exc from None
        if not isinstance(raw, list) or not raw or not isinstance(raw[0], dict):
            raise
        ack = raw[1] if len(raw) > 1 and isinstance(raw[1], str) else ""
        return Record(salvage_task(raw[0], str(exc)), ack)


def ack_sequence(reply: str) -> int:
    """Stream sequence of the ticket a ``$JS.ACK...`` reply subject acknowledges (0 if unknown)."""
    parts = reply.split(".")
    # v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending> (9 tokens);
    # v2 adds <domain>.<account hash> after ACK and a random token at the end (12 tokens).
    if len(parts) == 9:
        return int(parts[5])
    if len(parts) >= 12:
        return int(parts[7])
    return 0


def claimed(task: Task, *, now: datetime, lease: float, worker_id: str) -> Task:
    """The task as a fresh claim leaves it (RUNNING, attempt + 1, new token and deadline)."""
    return msgspec.structs.replace(
        task,
        status=TaskStatus.RUNNING,
        attempts=task.attempts + 1,
        lease_token=new_id(),
        lease_expires_at=now + timedelta(seconds=lease),
        started_at=now,
        updated_at=now,
        worker_id=worker_id,
    )


def expired(task: Task, now: datetime) -> Task:
    """The task as lease recovery leaves it: PENDING again, or FAILED when out of attempts."""
    cleared = {"lease_token": None, "lease_expires_at": None, "updated_at": now}
    if task.attempts >= task.max_attempts:
        return msgspec.structs.replace(
            task, status=TaskStatus.FAILED, error=lease_expired_error(task), finished_at=now, **cleared
        )
    return msgspec.structs.replace(task, status=TaskStatus.PENDING, eta=now, **cleared)
