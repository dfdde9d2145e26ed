"""The conformance kit: the suites every backend must pass, and their helpers.

A backend's test module subclasses the suites and provides one factory
fixture per component (see ``docs/backends.md``)::

    import pytest
    from omniq.backends.memory import MemoryStore, MemoryTaskQueue
    from omniq.testing import TaskQueueSuite

    class TestMemoryTaskQueue(TaskQueueSuite):
        @pytest.fixture
        def task_queue_factory(self):
            store = MemoryStore()
            return lambda: MemoryTaskQueue(store=store)

The task queue suite is split by area of the contract (enqueue, unique keys,
claiming, scheduling, pausing, waiting, leases, finishing, cancelling,
listing, the operations (pages, statistics, retry, headers), the worker registry,
fork safety, corrupted records, the fused paths): one module each in
:mod:`omniq.testing.task_queue`. Tests that need a capability skip with a
reason through :func:`requires`.

The pytest plugin :mod:`omniq.testing.plugin` provides ``anyio_backend``,
``omniq_app`` and the server URL fixtures; load it with ``-p omniq.testing.plugin``.
For testing code that enqueues, see :mod:`omniq.testing.apps` (``drain``,
``memory_app``) and eager mode (``OMNIQ_EAGER=1``). The fault suite, real worker
processes on the backend killed and stopped, is :mod:`omniq.testing.faults`
(``FaultSuite``, imported from there: it is not loaded with this package).
"""

from __future__ import annotations

import pytest

# The suites' asserts are the contract: pytest rewrites them, as it does a test module's, so a
# failing check shows the values compared. This must run before the suite modules are imported.
pytest.register_assert_rewrite(
    "omniq.testing.event_storage",
    "omniq.testing.faults",
    "omniq.testing.fixtures",
    "omniq.testing.result_storage",
    "omniq.testing.task_queue",
)

from omniq.testing.apps import drain, memory_app  # noqa: E402
from omniq.testing.event_storage import EventStorageSuite  # noqa: E402
from omniq.testing.fixtures import (  # noqa: E402
    CLOCK_SKEW,
    ForkedChild,
    connected,
    make_event,
    make_result,
    make_task,
    make_worker,
    now_ms,
    requires,
    wait_until,
)
from omniq.testing.result_storage import ResultStorageSuite  # noqa: E402
from omniq.testing.task_queue import TaskQueueSuite  # noqa: E402

__all__ = [
    "CLOCK_SKEW",
    "EventStorageSuite",
    "ForkedChild",
    "ResultStorageSuite",
    "TaskQueueSuite",
    "connected",
    "drain",
    "make_event",
    "make_result",
    "make_task",
    "make_worker",
    "memory_app",
    "now_ms",
    "requires",
    "wait_until",
]
