"""The lease state machine's steps, for backends that store whole task envelopes.

SQL and script backends express the same rules in their statements; memory,
files and key-value stores (NATS KV) compute the next envelope with these and
write it back under their own compare-and-set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from omniq.models import TERMINAL_STATUSES, OutcomeKind, TaskError, TaskStatus

if TYPE_CHECKING:
    from datetime import datetime

    from omniq.models import Outcome, Task

__all__ = ["apply_outcome", "lease_expired_error"]


def apply_outcome(task: Task, outcome: Outcome, now: datetime) -> Task | None:
    """The task after ``outcome`` is accepted, or None when its lease is not the one held.

    The lease state machine's finish step for backends that store whole task
    envelopes (memory, files, KV stores); SQL and script backends express the
    same rules in their statements. RETRY / RELEASE / RESCHEDULE without an
    eta keep the task's old eta, so it is ready at once and keeps its place.
    """
    if task.status is not TaskStatus.RUNNING or task.lease_token != outcome.lease_token:
        return None
    status = outcome.status
    changes: dict[str, object] = {
        "status": status,
        "lease_token": None,
        "lease_expires_at": None,
        "updated_at": now,
        "error": outcome.error,
    }
    if status in TERMINAL_STATUSES:
        changes["finished_at"] = now
    else:
        if outcome.eta is not None:
            changes["eta"] = outcome.eta
        if outcome.kind is OutcomeKind.RELEASE:
            # Handed back unrun: nobody holds or started it any more.
            changes.update(attempts=max(task.attempts - 1, 0), started_at=None, worker_id=None)
        elif outcome.kind is OutcomeKind.RESCHEDULE:
            changes["attempts"] = 0
    return msgspec.structs.replace(task, **changes)


def lease_expired_error(task: Task) -> TaskError:
    """The error recorded when a task's last attempt lost its lease."""
    return TaskError(
        type="LeaseExpired",
        message=f"the worker holding attempt {task.attempts} stopped renewing its lease",
        attempt=task.attempts,
        retryable=False,
    )
