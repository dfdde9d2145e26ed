"""Conformance tests for :class:`~omniq.base.BaseTaskQueue`, one module per area of the contract.

Subclass :class:`TaskQueueSuite` in a class named ``Test...`` and provide a
``task_queue_factory`` fixture: a zero-argument callable returning a new,
unconnected queue bound to one store that is private to the test. Optionally
provide ``fused_result_storage_factory`` (result storages the queue can fuse
with) to run the fused-results tests, ``fused_event_storage_factory`` (event
storages it can fuse with) to run the fused-events tests, and
``corrupt_record`` (writes a corrupted field; see
:mod:`omniq.testing.task_queue.corrupt_records`) to run the corrupted-record
tests. A queue with the transactional-enqueue capability must provide
``caller_transaction`` (see :mod:`omniq.testing.task_queue.transactions`).

Each area is a class of its own (sharing only :mod:`.kit`), so a backend that
is still growing may subclass some areas alone; :class:`TaskQueueSuite` lists
them all.
"""

from __future__ import annotations

from omniq.testing.task_queue.blocking import BlockingEnqueueTests, BlockingReadTests
from omniq.testing.task_queue.cancelling import CancelTests
from omniq.testing.task_queue.claiming import ClaimingTests
from omniq.testing.task_queue.corrupt_records import CorruptRecordTests
from omniq.testing.task_queue.dependencies import DependencyTests
from omniq.testing.task_queue.enqueue import EnqueueTests
from omniq.testing.task_queue.finishing import FinishingTests
from omniq.testing.task_queue.flow_control import FlowControlTests
from omniq.testing.task_queue.fork_safety import ForkSafetyTests
from omniq.testing.task_queue.fused import FusedEventTests, FusedResultTests
from omniq.testing.task_queue.leases import LeaseTests
from omniq.testing.task_queue.listing import ListingTests
from omniq.testing.task_queue.operations import HeaderTests, ListPageTests, QueueStatsTests, RetryTests
from omniq.testing.task_queue.pausing import PauseTests, QueuePauseTests
from omniq.testing.task_queue.scheduling import SchedulingTests
from omniq.testing.task_queue.transactions import TransactionalEnqueueTests
from omniq.testing.task_queue.unique_keys import UniqueKeyTests
from omniq.testing.task_queue.waiting import WaitingTests
from omniq.testing.task_queue.workers import WorkerRegistryTests

__all__ = [
    "BlockingEnqueueTests",
    "BlockingReadTests",
    "CancelTests",
    "ClaimingTests",
    "CorruptRecordTests",
    "DependencyTests",
    "EnqueueTests",
    "FinishingTests",
    "FlowControlTests",
    "ForkSafetyTests",
    "FusedEventTests",
    "FusedResultTests",
    "HeaderTests",
    "LeaseTests",
    "ListPageTests",
    "ListingTests",
    "PauseTests",
    "QueuePauseTests",
    "QueueStatsTests",
    "RetryTests",
    "SchedulingTests",
    "TaskQueueSuite",
    "TransactionalEnqueueTests",
    "UniqueKeyTests",
    "WaitingTests",
    "WorkerRegistryTests",
]


class TaskQueueSuite(
    EnqueueTests,
    UniqueKeyTests,
    ClaimingTests,
    SchedulingTests,
    PauseTests,
    WaitingTests,
    LeaseTests,
    FinishingTests,
    DependencyTests,
    CancelTests,
    ListingTests,
    ListPageTests,
    QueueStatsTests,
    RetryTests,
    HeaderTests,
    WorkerRegistryTests,
    FlowControlTests,
    QueuePauseTests,
    ForkSafetyTests,
    CorruptRecordTests,
    FusedResultTests,
    FusedEventTests,
    TransactionalEnqueueTests,
    BlockingEnqueueTests,
    BlockingReadTests,
):
    """Every behaviour of the task queue contract, against a real engine: the areas above, in order."""
