"""A workflow member's parents' results, put before its own arguments by the worker that runs it.

See :mod:`omniq.workflows`: a member with the ``omniq-parent`` header receives its only parent's
value (``one``) or the list of its parents' values in ``depends_on`` order (``all``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from omniq.errors import OmniQError
from omniq.models import PARENT_HEADER
from omniq.serialization import call_arguments
from omniq.workflows import ONE

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.app import AsyncOmniQ
    from omniq.models import Task, TaskResult

__all__ = ["PARENT_RESULT_WAIT", "DependencyResultMissing", "parent_mode", "with_parent_value"]

#: how long a member waits for a parent's result to be written after the parent ended (the worker
#: writes it right after the queue accepts the outcome, unless the queue wrote it in the same step).
PARENT_RESULT_WAIT = 60.0


def parent_mode(task: Task) -> str | None:
    """How ``task`` receives its parents' results (``one`` / ``all``), or None: it does not."""
    headers = task.headers
    return headers.get(PARENT_HEADER) if headers else None


async def with_parent_value(
    app: AsyncOmniQ, task: Task, mode: str, results: Sequence[TaskResult | None] | None = None
) -> Task:
    """``task`` with its parents' result put before its own arguments (in its payload, to decode as usual).

    The value is the parent's result (``one``) or the list of its parents' results (``all``), as
    stored: the member's own annotations decide the types it receives. Read from the result
    storage; a parent that ended moments ago may not have its result written yet (a worker writes
    it after the queue accepted the outcome, unless both are one step), so a missing one is waited for.

    ``results``: the parents' results if the caller read them already (None: read here).

    Raises:
        DependencyResultMissing: a parent's result is gone (expired, purged) or never came.
        SerializationError: a stored result or the task's payload cannot be decoded.
    """
    storage = app.result_storage
    loads = app.serializer.loads
    values = []
    if results is None:
        results = await storage.get_many(task.depends_on)
    for dep_id, result in zip(task.depends_on, results, strict=True):
        if result is None:
            result = await storage.wait(dep_id, PARENT_RESULT_WAIT)
        if result is None:
            raise DependencyResultMissing(f"the result of {dep_id}, which {task.id} receives, is not stored")
        values.append(loads(result.payload) if result.payload else None)
    if mode == ONE and len(values) != 1:
        raise DependencyResultMissing(f"{task.id} receives one parent's result but has {len(values)} parents")
    args, kwargs = call_arguments(loads(task.payload))
    payload = app.serializer.dumps(((values[0] if mode == ONE else values, *args), kwargs))
    return msgspec.structs.replace(task, payload=payload)


class DependencyResultMissing(OmniQError):
    """A workflow member's parent succeeded but its result cannot be read (expired or purged)."""
