"""OmniQ backend for NATS JetStream.

Install ``omniq-nats`` and set ``OMNIQ_BACKEND=nats`` (and ``OMNIQ_URL=nats://host:4222``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins import lazy_exports

if TYPE_CHECKING:
    from omniq_nats.connection import drop_prefix
    from omniq_nats.event_storage import NatsEventStorage
    from omniq_nats.result_storage import NatsResultStorage
    from omniq_nats.task_queue import NatsTaskQueue

__all__ = ["NatsEventStorage", "NatsResultStorage", "NatsTaskQueue", "drop_prefix"]

__getattr__ = lazy_exports(
    __name__,
    {
        "NatsEventStorage": "omniq_nats.event_storage",
        "NatsResultStorage": "omniq_nats.result_storage",
        "NatsTaskQueue": "omniq_nats.task_queue",
        "drop_prefix": "omniq_nats.connection",
    },
)
