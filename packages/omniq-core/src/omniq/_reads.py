"""Reading one task or one result: the steps written once, run over either transport.

``AsyncOmniQ.get_task`` / ``get_result`` and the sync ``OmniQ``'s reads in the
caller's thread (:attr:`~omniq.capabilities.Capability.BLOCKING_READS`) make
the same reads in the same order with the same rules; only how a read is
made differs. So the rules are a generator that yields each read it needs
(``(TASK, id)`` from the task queue, ``(RESULT, key)`` from the result
storage) and returns the answer, and two small drivers make the reads: one
awaits the components' ``get``, the other calls their ``get_blocking``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import msgspec

from omniq.models import Task, TaskResult, TaskStatus
from omniq.progress import progress_key, progress_of

if TYPE_CHECKING:
    from omniq._components import Components

__all__ = ["RESULT", "TASK", "read", "read_blocking", "result_steps", "task_steps"]

TASK = "task"  # a read of the task queue's record
RESULT = "result"  # a read of the result storage

_Steps = Generator[tuple[str, str], Any, Any]


def task_steps(task_id: str) -> _Steps:
    """The task record, or None; a RUNNING one with its latest ``progress`` report (:mod:`omniq.progress`)."""
    task: Task | None = yield TASK, task_id
    if task is not None and task.status is TaskStatus.RUNNING:
        progress = progress_of(task, (yield RESULT, progress_key(task_id)))
        if progress is not None:
            task = msgspec.structs.replace(task, progress=progress)
    return task


def result_steps(task_id: str, decode: Callable[[TaskResult], TaskResult]) -> _Steps:
    """The stored result, or one made from a terminal task record without one, through ``decode``; None while there is none.

    A worker that died between the queue's finish and the result's write
    leaves a terminal record and no result (:mod:`omniq._results`).
    """
    result: TaskResult | None = yield RESULT, task_id
    if result is None:
        task: Task | None = yield TASK, task_id
        if task is None or not task.status.is_terminal:
            return None
        result = yield RESULT, task_id  # written since the first read
        if result is None:
            result = TaskResult.from_task(task, finished_at=task.finished_at)
    return decode(result)


async def read(components: Components, steps: _Steps) -> Any:
    """Run ``steps`` with the components' ``get``; their answer."""
    queue, results = components.task_queue, components.result_storage
    try:
        kind, key = next(steps)
        while True:
            kind, key = steps.send(await (queue.get(key) if kind == TASK else results.get(key)))
    except StopIteration as done:
        return done.value


def read_blocking(components: Components, steps: _Steps) -> Any:
    """Run ``steps`` with the components' ``get_blocking``, in the calling thread; their answer."""
    queue, results = components.task_queue, components.result_storage
    try:
        kind, key = next(steps)
        while True:
            kind, key = steps.send(queue.get_blocking(key) if kind == TASK else results.get_blocking(key))
    except StopIteration as done:
        return done.value
