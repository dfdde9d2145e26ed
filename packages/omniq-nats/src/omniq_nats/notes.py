"""Notes in the lease index: dependency edges that ``recover`` looks at again later (the crash backstop).

A *note* is a message on the lease index (``<prefix>.lease.<second>``, see
:mod:`omniq_nats.leases`) marked by the :data:`HEADER` header, whose body is a
list of (dependency id, dependant id) pairs. It is filed ``ack_wait`` seconds
ahead, in the same pipelined batch as, and *before*, the write whose
follow-up it covers:

* a write that ends a dependency others wait on (or deletes it) notes the
  pairs it releases; the release itself (:func:`omniq_nats.dependencies.release`)
  follows the write;
* the creation of a waiting task notes the pairs it waits on; the re-read
  that catches a dependency ended meanwhile follows the creation.

Requests sent on one connection reach the server in order, so a write that
was sent had its note sent before it: should the process die between the
write and its follow-up, the note is stored, and ``recover``, which reads
every due second of the lease index anyway, finds it there and does the
follow-up (:func:`omniq_nats.dependencies.sweep`). A note whose write never
happened or lost its compare-and-set is looked at for nothing. Only steps
that touch dependencies file notes: a task nobody waits on never does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from omniq_nats import subjects as names
from omniq_nats.jetstream import answered

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from nats.aio.msg import Msg

    from omniq_nats.connection import QueueClient

__all__ = ["HEADER", "Pairs", "note_request", "read_note", "update_noting", "with_note"]

logger = logging.getLogger("omniq.nats")

#: header marking a lease index message as a note (plain lease entries have no headers).
HEADER = "Omniq-Dependants"

#: (dependency id, dependant id) pairs.
Pairs = list[tuple[str, str]]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[str, str]]).decode


def note_request(
    client: QueueClient, pairs: Sequence[tuple[str, str]], now: datetime
) -> tuple[str, bytes, dict[str, str]]:
    """The request filing a note of ``pairs``, due ``ack_wait`` seconds after ``now`` (engine time)."""
    second = int(now.timestamp() + client.ack_wait) + 1
    return names.lease_subject(client.prefix, second), _encode(list(pairs)), {HEADER: "1"}


def read_note(msg: Msg) -> Pairs | None:
    """The pairs a lease index message notes (None: a plain lease entry; [] for an unreadable note)."""
    headers = msg.headers
    if not headers or HEADER not in headers:
        return None
    try:
        return _decode(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        logger.error("dropping an unreadable dependency note on %s", msg.subject)
        return []


def _stored(answer: Msg) -> None:
    """Log a note the lease index refused (the write it covers is sent all the same: only the backstop is lost)."""
    try:
        data = answered(answer).data
    except Exception as exc:  # no responders: the lease stream is gone
        logger.warning("a dependency note was not stored: %s", type(exc).__name__)
        return
    if b'"error"' in data:
        logger.warning("a dependency note was not stored: %s", data.decode(errors="replace"))


async def with_note(
    client: QueueClient,
    pairs: Sequence[tuple[str, str]],
    now: datetime,
    requests: Sequence[tuple[str, bytes, dict[str, str] | None]],
) -> list[Msg]:
    """Send the note of ``pairs`` and then ``requests`` in one pipelined batch; the answers of ``requests``."""
    answers = await client.mux.request_many([note_request(client, pairs, now), *requests])
    _stored(answers[0])
    return answers[1:]


async def update_noting(
    client: QueueClient, items: Sequence[tuple[str, bytes, int]], pairs: Sequence[tuple[str, str]], now: datetime
) -> list[int | None]:
    """``client.tasks.update_many(items)`` with the note of ``pairs`` sent ahead in the same batch."""
    bucket = client.tasks
    answers = await with_note(client, pairs, now, [bucket.update_request(k, v, last) for k, v, last in items])
    return [bucket.written(answer) for answer in answers]
