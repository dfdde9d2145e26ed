"""Task ids and the clock: time-ordered ids made cheaply, and aware UTC now (re-exported by :mod:`omniq.models`)."""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone

__all__ = ["new_id", "new_ids", "utcnow"]

_random_bits = random.getrandbits


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """Return a new task id: 32 hex characters, time-ordered like a UUIDv7.

    The first 12 characters are the millisecond Unix time, the other 20 are
    random (80 bits). Ids created later sort later, so engines that index by
    id (SQLite, PostgreSQL) append to the end of their indexes instead of
    dirtying a random page per insert.
    """
    # Not from os.urandom: ids need uniqueness, not secrecy, and a syscall per id shows up
    # on the enqueue path. random's Mersenne Twister is re-seeded in forked children by CPython.
    return f"{int(time.time() * 1000):012x}{_random_bits(80):020x}"


def new_ids(count: int) -> list[str]:
    """Return ``count`` new ids (shaped as :func:`new_id`), ascending, with one clock read and one random draw.

    A bulk enqueue makes thousands of ids; one at a time they cost more than building the tasks.
    The random part runs up from a random 79-bit start, so the batch's ids sort in creation
    order too: an engine's index appends them instead of splitting pages all over the batch's
    range. Another batch collides only if its range overlaps this one in the same millisecond.
    """
    prefix = f"{int(time.time() * 1000):012x}"
    start = _random_bits(79)
    return [f"{prefix}{start + i:020x}" for i in range(count)]
