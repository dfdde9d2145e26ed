"""OmniQ backend for NATS JetStream.

Install ``omniq-nats`` and set ``OMNIQ_BACKEND=nats`` (and ``OMNIQ_URL=nats://host:4222``).
"""

from __future__ import annotations

from omniq_nats._connection import drop_prefix
from omniq_nats.event_storage import NatsEventStorage
from omniq_nats.result_storage import NatsResultStorage
from omniq_nats.task_queue import NatsTaskQueue

__all__ = ["NatsEventStorage", "NatsResultStorage", "NatsTaskQueue", "drop_prefix"]
