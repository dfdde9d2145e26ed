"""The fault suite: real worker processes (``omniq worker``) against a backend, stopped, killed and cut off.

The conformance suites check each method of the contract; this one checks
what a deployment meets, through whole worker processes on the backend's own
store: SIGKILL mid-task (the tasks run again elsewhere, once each), SIGTERM
(the running task finishes, or is released past the grace period), a second
SIGINT, a poison task that kills its process, a corrupted payload, an unknown
task name, several producers and workers at once, and connections dropped by
the network (through :class:`TcpProxy`, for a store reached over TCP).

A backend distribution runs it as it runs the conformance suite: subclass
:class:`FaultSuite` in a class named ``Test...`` and give it the ``fault_env``
fixture, the ``OMNIQ_*`` variables that point all three components at a store
private to the test (it deletes the store afterwards)::

    import pytest
    from omniq.testing.faults import FaultSuite

    class TestAcmeFaults(FaultSuite):
        @pytest.fixture
        def fault_env(self, tmp_path):
            return {"OMNIQ_BACKEND": "acme", "OMNIQ_BASE_DIR": str(tmp_path / "data")}

The backend must be installed (selected by ``OMNIQ_BACKEND`` through its entry
point) where the workers start: they are ``python -m omniq worker
omniq.testing.faults.app:app`` processes with the test process's environment
(its ``OMNIQ_*`` variables replaced by ``fault_env`` and :data:`FAULT_TIMINGS`).
Only multi-process, durable backends can pass it.
"""

from __future__ import annotations

from omniq.testing.faults.cluster import (
    APP,
    FAULT_TIMINGS,
    Cluster,
    FaultTests,
    settings_of,
    task_queue_of,
    wait_for,
)
from omniq.testing.faults.connections import ConnectionFaultTests
from omniq.testing.faults.records import BadTaskTests
from omniq.testing.faults.tcpproxy import TcpProxy
from omniq.testing.faults.workers import WorkerFaultTests

__all__ = [
    "APP",
    "FAULT_TIMINGS",
    "BadTaskTests",
    "Cluster",
    "ConnectionFaultTests",
    "FaultSuite",
    "FaultTests",
    "TcpProxy",
    "WorkerFaultTests",
    "settings_of",
    "task_queue_of",
    "wait_for",
]


class FaultSuite(WorkerFaultTests, BadTaskTests, ConnectionFaultTests):
    """Every fault test, against real worker processes on the backend of the subclass's ``fault_env``."""
