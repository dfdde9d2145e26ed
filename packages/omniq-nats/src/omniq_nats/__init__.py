"""OmniQ backend for NATS JetStream.

Install ``omniq-nats`` and set ``OMNIQ_BACKEND=nats`` (and ``OMNIQ_URL=nats://host:4222``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniq_nats._connection import drop_prefix
    from omniq_nats.event_storage import NatsEventStorage
    from omniq_nats.result_storage import NatsResultStorage
    from omniq_nats.task_queue import NatsTaskQueue

__all__ = ["NatsEventStorage", "NatsResultStorage", "NatsTaskQueue", "drop_prefix"]

_LAZY = {
    "NatsEventStorage": "omniq_nats.event_storage",
    "NatsResultStorage": "omniq_nats.result_storage",
    "NatsTaskQueue": "omniq_nats.task_queue",
    "drop_prefix": "omniq_nats._connection",
}


def __getattr__(name: str) -> Any:
    # Imported lazily: the entry point loads omniq_nats.plugin, which imports this package first,
    # and the driver must not be imported until settings select this backend.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omniq_nats' has no attribute {name!r}")
