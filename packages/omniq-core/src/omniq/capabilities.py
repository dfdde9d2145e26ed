"""The names a backend puts in its classes' ``capabilities`` to say what it can do.

Declared once, on each component class (``capabilities: ClassVar[frozenset[str]]``);
the conformance suite skips what a class does not claim, the core uses the
fused paths only where claimed, and ``omniq backends`` prints them.
"""

from __future__ import annotations

__all__ = ["Capability"]


class Capability:
    """Names a backend puts in ``capabilities`` to say what it can do.

    The conformance suite and the core read them; unknown names are ignored.
    """

    #: several processes on one host may share the engine (SQLite, files, servers).
    MULTI_PROCESS = "multi_process"
    #: several hosts may share the engine (Redis, PostgreSQL, NATS).
    MULTI_HOST = "multi_host"
    #: ``wait_for_work`` / ``wait`` wake on a signal instead of polling.
    BLOCKING_WAIT = "blocking_wait"
    #: ``finish(outcomes, results=...)`` writes results in the same atomic step
    #: when the result storage lives on the same engine (see ``can_fuse_results``).
    FUSED_RESULTS = "fused_results"
    #: ``enqueue_recorded`` writes a bulk enqueue's events alongside the tasks
    #: (see ``can_fuse_events``), instead of after them through the event buffer.
    FUSED_EVENTS = "fused_events"
    #: data survives a restart of the process (not ``memory``).
    DURABLE = "durable"
    #: a forked child (a process-pool task that enqueues) may use a task queue connected before
    #: the fork: it gets connections of its own and leaves the parent's working.
    FORK_SAFE = "fork_safe"
    #: workers register in the engine (``register_worker``), so ``list_workers`` sees every
    #: process and host; without it the default registry shows this process's workers only.
    WORKER_REGISTRY = "worker_registry"
    #: the claim applies tasks' rate and concurrency limits in the engine, across every worker
    #: (:mod:`omniq.flow_control`); without it a limited task is refused at enqueue.
    FLOW_CONTROL = "flow_control"
    #: ``set_queue_paused``: claims skip a paused queue, for every worker of the engine.
    QUEUE_PAUSE = "queue_pause"
    #: ``enqueue_in_transaction``: tasks are stored through a database connection of the caller's,
    #: inside its open transaction, so a rollback enqueues nothing (PostgreSQL, SQLite).
    TRANSACTIONAL_ENQUEUE = "transactional_enqueue"
    #: a task with ``depends_on`` is stored waiting (``Task.waiting``, not claimable) and made ready by the
    #: step that finishes its last dependency, so a dependant is claimed once, when it can run; without it
    #: the worker claims a dependant, finds a dependency unfinished and puts it back to look again later.
    DEPENDENCIES = "dependencies"
    #: ``enqueue_blocking``: tasks are stored from a thread with no event loop, in that thread (the sync
    #: ``OmniQ`` enqueues this way instead of through its loop thread: no hand-off to wait for).
    BLOCKING_ENQUEUE = "blocking_enqueue"
    #: ``get_blocking``: a task (on a task queue) or a result (on a result storage) is read from a thread
    #: with no event loop, in that thread (the sync ``OmniQ.get_task`` / ``get_result`` read this way
    #: when both components claim it, instead of through its loop thread).
    BLOCKING_READS = "blocking_reads"
