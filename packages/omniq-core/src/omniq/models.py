"""The data OmniQ moves around: tasks, results, errors, events, schedules.

Every model is a :class:`msgspec.Struct`, so the whole envelope encodes to
MessagePack in one C call (:func:`encode_task` / :func:`decode_task`), which
is what blob-storing backends (Redis, NATS, files) persist. The task's
arguments are *not* part of the envelope's schema: they travel as
``Task.payload``, bytes produced by a :mod:`omniq.serialization` serializer
and prefixed with its format tag, so a backend never needs the user's
serializer and a corrupted payload is detected by the worker, not the engine.

All datetimes are timezone-aware UTC. The field types say so to msgspec
(:data:`AwareDatetime`, :data:`Seconds`), so decoding a stored record checks
it in C for free: a naive datetime or a non-finite or absurd duration in a
record is a corrupted record (:class:`~omniq.errors.SerializationError`),
never a value that blows up later in a worker. See :mod:`omniq._records`
for the checks of records built from columns.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec

from omniq._ids import new_id, new_ids, utcnow
from omniq.constants import MAX_DURATION_SECONDS
from omniq.errors import SerializationError
from omniq.flow_control import Limits

__all__ = [
    "TERMINAL_STATUSES",
    "PARENT_HEADER",
    "WORKFLOW_HEADER",
    "AwareDatetime",
    "Seconds",
    "EventType",
    "Outcome",
    "OutcomeKind",
    "Task",
    "TaskError",
    "TaskEvent",
    "TaskProgress",
    "TaskResult",
    "TaskStatus",
    "decode_result",
    "decode_task",
    "encode_result",
    "encode_task",
    "new_id",
    "new_ids",
    "utcnow",
]


#: a datetime with a timezone: msgspec refuses a naive one when it decodes a record.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
#: a finite duration in seconds, at most a century either way (refuses nan and inf).
Seconds = Annotated[float, msgspec.Meta(ge=-MAX_DURATION_SECONDS, le=MAX_DURATION_SECONDS)]


class TaskStatus(str, enum.Enum):
    """Where a task is in its life.

    PENDING covers both "ready" and "scheduled" (an ``eta`` in the future)
    and "waiting for its dependencies". RUNNING means a worker holds a lease.
    The last four are terminal.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        """Whether no further transition can happen."""
        return self in TERMINAL_STATUSES


#: the task header naming a workflow member's workflow (see :mod:`omniq.workflows`).
WORKFLOW_HEADER = "omniq-workflow"
#: the task header saying a workflow member receives its parents' results first: ``one`` (its only
#: parent's value) or ``all`` (the list of its parents' values, in ``depends_on`` order).
PARENT_HEADER = "omniq-parent"

TERMINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED})


class TaskError(msgspec.Struct, kw_only=True):
    """Why an attempt failed.

    Attributes:
        type: exception class name (``"ZeroDivisionError"``) or an OmniQ
            reason (``"LeaseExpired"``, ``"UnknownTaskError"``, ``"DependencyFailed"``).
        message: ``str(exc)``.
        traceback: formatted traceback, empty when there is none.
        attempt: the attempt (1-based) that failed.
        retryable: whether another attempt could succeed.
    """

    type: str
    message: str
    traceback: str = ""
    attempt: int = 0
    retryable: bool = True


class TaskProgress(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A running task's report (``omniq.report_progress``): ``done`` of ``total`` (None: unknown), ``message``, ``at``."""

    done: float
    total: float | None = None
    message: str | None = None
    at: AwareDatetime

    @property
    def fraction(self) -> float | None:
        """``done / total`` (None without a total)."""
        return None if self.total is None else self.done / self.total


class Task(msgspec.Struct, kw_only=True, gc=False):
    """One unit of work, as stored by a task queue.

    A recurring task (``interval`` or ``cron`` set) keeps its id across runs:
    the id is its schedule id, and each run's result replaces the previous one.
    """

    # gc=False: a task holds only plain values (strings, bytes, numbers, datetimes, a tuple of ids,
    # a TaskError, a dict of strings), so it can never be part of a reference cycle; untracked, the thousands a bulk
    # enqueue or a claim creates trigger no garbage collections (a full one costs a bulk enqueue
    # of 10k tasks ~15 ms).

    id: str
    func: str
    payload: bytes = b""
    queue: str = "default"
    priority: int = 0
    unique_key: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    eta: AwareDatetime | None = None
    interval: Seconds | None = None
    cron: str | None = None
    paused: bool = False
    attempts: int = 0
    max_retries: int = 0
    timeout: Seconds | None = None
    expires_at: AwareDatetime | None = None
    result_ttl: Seconds | None = None
    depends_on: tuple[str, ...] = ()
    #: how many of ``depends_on`` had not finished yet; the task is not claimable while it is above 0
    #: (engines with ``Capability.DEPENDENCIES``; the others keep 0 and the worker checks at claim).
    waiting: int = 0
    created_at: AwareDatetime = msgspec.field(default_factory=utcnow)
    updated_at: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    lease_token: str | None = None
    lease_expires_at: AwareDatetime | None = None
    worker_id: str | None = None
    error: TaskError | None = None
    #: small string metadata carried with the task (a W3C ``traceparent``); None when there is none.
    headers: dict[str, str] | None = None
    #: rate and concurrency limits the engine applies at claim (:mod:`omniq.flow_control`); None: none.
    limits: Limits | None = None
    #: flow-control bookkeeping of the engine (waiting for a concurrency slot; holding a reserved
    #: rate slot at ``eta``); engines that keep it outside the record may report both as False.
    held: bool = False
    rate_reserved: bool = False
    #: the latest progress the running attempt reported; not stored by the task queue: ``get_task`` fills it
    #: in from the result storage while the task is RUNNING (:mod:`omniq.progress`), else None.
    progress: TaskProgress | None = None

    @property
    def recurring(self) -> bool:
        """Whether the task runs again after each run (interval or cron)."""
        return self.interval is not None or self.cron is not None

    @property
    def max_attempts(self) -> int:
        """Total runs allowed: the first attempt plus ``max_retries``."""
        return self.max_retries + 1

    @property
    def workflow_id(self) -> str | None:
        """The id of the workflow (chain, group, chord) this task is a member of, or None."""
        headers = self.headers
        return headers.get(WORKFLOW_HEADER) if headers else None


class TaskResult(msgspec.Struct, kw_only=True):
    """The final outcome of a task (or of the latest run of a schedule).

    ``payload`` is the serialized return value with its format tag; the
    application decodes it into ``result`` when it hands the result to a
    user. ``result`` is never stored.
    """

    task_id: str
    status: TaskStatus
    payload: bytes = b""
    error: TaskError | None = None
    attempts: int = 0
    func: str = ""
    queue: str = "default"
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime = msgspec.field(default_factory=utcnow)
    expires_at: AwareDatetime | None = None
    result: Any = msgspec.UNSET

    @property
    def ok(self) -> bool:
        """Whether the task succeeded."""
        return self.status is TaskStatus.SUCCEEDED

    @classmethod
    def from_task(
        cls,
        task: Task,
        status: TaskStatus | None = None,
        *,
        payload: bytes = b"",
        error: TaskError | None = None,
        finished_at: datetime | None = None,
    ) -> TaskResult:
        """The result of ``task`` (its own status and error unless given), expiring after its ``result_ttl``."""
        now = finished_at or utcnow()
        return cls(
            task_id=task.id,
            status=status or task.status,
            payload=payload,
            error=error if error is not None or status is not None else task.error,
            attempts=task.attempts,
            func=task.func,
            queue=task.queue,
            started_at=task.started_at,
            finished_at=now,
            expires_at=_expiry(now, task.result_ttl),
        )


def _expiry(now: datetime, ttl: float | None) -> datetime | None:
    """``now + ttl``, or None (kept, no expiry) when the ttl cannot be added.

    A record built from columns is not checked by msgspec (nan, inf, or past year 9999):
    returning None then means a failure's result can always be built.
    """
    if ttl is None:
        return None
    try:
        return now + timedelta(seconds=ttl)
    except (OverflowError, ValueError, TypeError):
        return None


class EventType(str, enum.Enum):
    """What happened to a task."""

    ENQUEUED = "enqueued"
    SCHEDULED = "scheduled"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    RELEASED = "released"
    RECOVERED = "recovered"
    PAUSED = "paused"
    RESUMED = "resumed"
    REQUEUED = "requeued"  # app.retry ran a FAILED/CANCELLED/EXPIRED task again (RETRYING: a worker's retry)


class TaskEvent(msgspec.Struct, kw_only=True, gc=False):
    """One entry of a task's history."""

    # gc=False: plain values only, never in a reference cycle (see Task).

    task_id: str
    type: EventType
    timestamp: AwareDatetime = msgspec.field(default_factory=utcnow)
    queue: str = "default"
    func: str = ""
    attempt: int = 0
    worker_id: str | None = None
    message: str = ""


class OutcomeKind(str, enum.Enum):
    """What a worker asks the queue to do with a task it holds.

    * SUCCEEDED / FAILED: terminal; clears the lease.
    * RETRY: back to PENDING at ``eta``; the attempt stays counted.
    * RELEASE: back to PENDING at ``eta`` (or now) and the attempt is refunded
      (graceful shutdown, dependencies not ready yet).
    * RESCHEDULE: a recurring task's run is over; back to PENDING at ``eta``
      (the next tick) with attempts reset to 0.
    * EXPIRED: the task's TTL passed before it could run; terminal.
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"
    RELEASE = "release"
    RESCHEDULE = "reschedule"
    EXPIRED = "expired"


class Outcome(msgspec.Struct, kw_only=True):
    """A token-checked request to end (or hand back) a lease.

    Backends apply it only when ``(task_id, lease_token)`` still matches a
    RUNNING task; otherwise the lease was lost and the outcome is dropped.
    """

    task_id: str
    lease_token: str
    kind: OutcomeKind
    eta: datetime | None = None
    error: TaskError | None = None
    result: TaskResult | None = None

    @property
    def status(self) -> TaskStatus:
        """The status the task takes when the outcome is accepted."""
        return _OUTCOME_STATUS[self.kind]


_OUTCOME_STATUS = {
    OutcomeKind.SUCCEEDED: TaskStatus.SUCCEEDED,
    OutcomeKind.FAILED: TaskStatus.FAILED,
    OutcomeKind.RETRY: TaskStatus.PENDING,
    OutcomeKind.RELEASE: TaskStatus.PENDING,
    OutcomeKind.RESCHEDULE: TaskStatus.PENDING,
    OutcomeKind.EXPIRED: TaskStatus.EXPIRED,
}

_task_encoder = msgspec.msgpack.Encoder()
_task_decoder = msgspec.msgpack.Decoder(Task)
_result_decoder = msgspec.msgpack.Decoder(TaskResult)


def encode_task(task: Task) -> bytes:
    """Encode a task envelope to MessagePack (for blob-storing backends)."""
    return _task_encoder.encode(task)


def decode_task(data: bytes) -> Task:
    """Decode :func:`encode_task` output.

    Raises:
        omniq.errors.SerializationError: the bytes are not a task envelope.
    """
    try:
        return _task_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError included; RecursionError: nesting
        raise SerializationError(f"corrupted task envelope: {exc}") from exc


def encode_result(result: TaskResult) -> bytes:
    """Encode a result to MessagePack; ``result.result`` is never included."""
    if result.result is not msgspec.UNSET:
        result = msgspec.structs.replace(result, result=msgspec.UNSET)
    return _task_encoder.encode(result)


def decode_result(data: bytes) -> TaskResult:
    """Decode :func:`encode_result` output.

    Raises:
        omniq.errors.SerializationError: the bytes are not a result.
    """
    try:
        return _result_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError included; RecursionError: nesting
        raise SerializationError(f"corrupted result: {exc}") from exc
