"""How an idle worker blocks: BLPOP on the queues' wake-up lists, alone or with the claim script behind it.

Both run on the task queue's blocking connection (its own pool, no socket
timeout), so a long BLPOP never holds a connection the scripts need. How
long to block is :func:`omniq_redis.reads.block_time`'s answer, or the next
delayed eta the last claim reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omniq_redis.scripts import SCRIPTS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.connection import Connection
    from omniq_redis.connection import RedisClient

__all__ = ["BLOCK_MARGIN", "blpop", "blpop_then_claim"]

#: how long past its own timeout a blocking call may go unanswered before the connection counts as dead.
BLOCK_MARGIN = 10.0


async def blpop(blocking: Connection[RedisClient], signals: Sequence[str], block: float) -> None:
    """Wait up to ``block`` seconds for a token on any of the ``signals`` lists (taking it)."""
    client = await blocking.client()
    with blocking.errors():
        (reply,) = await client.pipeline([("BLPOP", *signals, block)], timeout=block + BLOCK_MARGIN)
        if isinstance(reply, Exception):
            raise reply


async def blpop_then_claim(blocking: Connection[RedisClient], signal: str, block: float, args: Sequence[Any]) -> Any:
    """BLPOP ``signal``, then run the claim script with ``args``, in one round trip.

    Returns the claim script's reply, or the exception it raised (the caller
    reloads the scripts on NOSCRIPT and translates the rest).
    """
    client = await blocking.client()
    with blocking.errors():
        _, reply = await client.pipeline(
            [("BLPOP", signal, block), ("EVALSHA", SCRIPTS["claim"].sha, 0, *args)], timeout=block + BLOCK_MARGIN
        )
    return reply
