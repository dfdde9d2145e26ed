"""Helpers shared by the task queue suite's modules (leases, tokens, errors, one-task claims)."""

from __future__ import annotations

from omniq.base import BaseTaskQueue
from omniq.models import Task, TaskError

__all__ = ["LONG", "SHORT", "claim_one", "error", "recover", "token"]

LONG = 30.0  # a lease that cannot expire during a test
SHORT = 0.3  # a lease meant to expire


def error(message: str = "boom", attempt: int = 1) -> TaskError:
    return TaskError(type="ValueError", message=message, traceback="Traceback...\n", attempt=attempt)


def token(task: Task) -> str:
    """The lease token of a claimed task."""
    assert task.lease_token is not None, f"task {task.id} holds no lease"
    return task.lease_token


async def recover(q: BaseTaskQueue) -> list[Task]:
    return await q.recover()


async def claim_one(q: BaseTaskQueue, queue: str = "default", *, lease: float = LONG, worker: str = "w1") -> Task:
    claimed = await q.claim_ready([queue], 1, lease=lease, worker_id=worker)
    assert len(claimed) == 1, f"expected one ready task in {queue!r}, claimed {len(claimed)}"
    return claimed[0]
