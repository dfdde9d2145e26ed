"""Workflows: signatures, ``chain``, ``group`` and ``chord``, built on ``depends_on`` and results.

Familiar shapes (Celery's canvas)::

    add.s(1, 2)                            # a signature: a call not yet enqueued
    chain(add.s(1, 2), add.s(10), mul.s(3))   # each result is the next one's first argument
    group(add.s(i, i) for i in range(10))  # in parallel; its result is the list of results, in order
    chord(group(...), total.s())           # the callback gets that list
    handle = await chain(...).enqueue()    # (sync OmniQ: chain(...).enqueue())
    await handle.get(timeout=30)           # the workflow's result

``.si(...)`` makes an immutable signature: it runs after its parent but does not
receive the parent's result. ``sig.set(queue="fast")`` gives enqueue options.

Every member is an ordinary task, enqueued in one batch, in an order where
each follows what it depends on: it carries ``depends_on`` (its parents) and
the workflow's id (``Task.workflow_id``, ``current_task().workflow_id``). On an
engine with ``Capability.DEPENDENCIES`` a member waits in the engine, not
claimable, until its last parent ends, so a chord's callback over thousands
of members is claimed once; elsewhere the worker checks at claim. A member
whose parent did not succeed fails with ``DependencyFailed`` naming it, and
so on down the workflow. The worker passes parents' results from the result
storage, so a queue on one engine and results on another work alike.

The workflow itself is a small record in the result storage (``<id>.workflow``:
its members and which of them give its result), so ``app.cancel(workflow_id)``
cancels every member not yet finished and ``app.workflow(workflow_id)`` finds
the handle again.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from omniq._options import EnqueueOptions, TaskOptions
from omniq.errors import ConfigurationError, OmniQError
from omniq.models import (
    PARENT_HEADER,
    WORKFLOW_HEADER,
    Task,
    TaskError,
    TaskResult,
    TaskStatus,
    new_id,
    utcnow,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from omniq.app import AsyncOmniQ
    from omniq.sync import OmniQ

__all__ = [
    "Signature",
    "SyncWorkflowHandle",
    "Workflow",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowNotFinished",
    "chain",
    "chord",
    "group",
]

#: the suffix of a workflow id that names its record in the result storage.
RECORD_SUFFIX = ".workflow"
#: the parent-result modes of a member (the ``omniq-parent`` header): one parent's value, or the
#: list of every parent's value in ``depends_on`` order.
ONE, ALL = "one", "all"


class WorkflowFailed(OmniQError):
    """A member whose result the workflow returns did not succeed.

    Attributes:
        task_id: the member's id.
        error: its error (``DependencyFailed`` when it never ran because one of its parents failed).
    """

    def __init__(self, workflow_id: str, task_id: str, status: TaskStatus, error: TaskError | None) -> None:
        self.workflow_id, self.task_id, self.status, self.error = workflow_id, task_id, status, error
        why = f"{error.type}: {error.message}" if error is not None else status.value
        super().__init__(f"workflow {workflow_id}: member {task_id} ended {status.value} ({why})")


class WorkflowNotFinished(OmniQError, TimeoutError):
    """``get(wait=False)`` on a workflow still running, or its ``timeout`` ran out."""


# -- the shapes ---------------------------------------------------------------------------------------

#: what a node hands to the next one: nothing (it starts the workflow), or the ids of the members
#: whose results it gives, with how: ``(ONE, [id])``, one member's value, or ``(ALL, ids)``, the list.
_Output = tuple[str, list[str]] | None


class Workflow(abc.ABC):
    """A signature, chain, group or chord: ``.enqueue()`` it (awaited with ``AsyncOmniQ``)."""

    @abc.abstractmethod
    def _plan(self, plan: _Plan, parent: _Output) -> _Output:
        """Add this node's members to ``plan`` after ``parent``; return what it hands on."""

    @abc.abstractmethod
    def _signatures(self) -> Iterable[Signature]:
        """Every signature in it, in order."""

    def __or__(self, other: Workflow) -> chain:
        """``a | b``: the chain of both."""
        return chain(self, other)

    def enqueue(self) -> Any:
        """Enqueue every member in one batch; the handle (a coroutine of it, with ``AsyncOmniQ``).

        The app is the first signature's: ``AsyncOmniQ.enqueue_workflow`` or, in sync code, ``OmniQ``'s.
        """
        first = next(iter(self._signatures()), None)
        if first is None:
            raise ValueError("an empty workflow: give it at least one signature")
        return first.app.enqueue_workflow(self)


class Signature(Workflow):
    """One task call, not yet enqueued: ``task.s(*args, **kwargs)`` (``task.si`` for an immutable one)."""

    def __init__(
        self,
        app: AsyncOmniQ | OmniQ,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: EnqueueOptions,
        *,
        immutable: bool = False,
    ) -> None:
        self.app, self.name, self.args, self.kwargs = app, name, args, kwargs
        self.options, self.immutable = options, immutable

    def set(self, *, immutable: bool | None = None, **options: Unpack[TaskOptions]) -> Signature:
        """A copy with enqueue options (``queue``, ``priority``, ``max_retries``, ...) on top of the task's.

        ``immutable=True``: it does not receive its parent's result (as ``task.si``).
        """
        merged = self.options.merged(EnqueueOptions.from_kwargs(options))
        keep = self.immutable if immutable is None else immutable
        return Signature(self.app, self.name, self.args, self.kwargs, merged, immutable=keep)

    def _plan(self, plan: _Plan, parent: _Output) -> _Output:
        return (ONE, [plan.add(self, parent)])

    def _signatures(self) -> Iterable[Signature]:
        return (self,)

    def __repr__(self) -> str:
        call = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.name}.{'si' if self.immutable else 's'}({call})"


class chain(Workflow):
    """Run the nodes one after the other, each result the next one's first argument."""

    def __init__(self, *nodes: Workflow) -> None:
        if not nodes:
            raise ValueError("chain() needs at least one signature")
        self.nodes = tuple(_node(n) for n in nodes)

    def _plan(self, plan: _Plan, parent: _Output) -> _Output:
        for node in self.nodes:
            parent = node._plan(plan, parent)
        return parent

    def _signatures(self) -> Iterable[Signature]:
        for node in self.nodes:
            yield from node._signatures()

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.nodes))


class group(Workflow):
    """Run the nodes in parallel; the result is the list of their results, in order.

    Each member is a signature or a chain (or chord) ending in one; each receives the group's parent.
    """

    def __init__(self, *nodes: Workflow | Iterable[Workflow]) -> None:
        if len(nodes) == 1 and not isinstance(nodes[0], Workflow):
            nodes = tuple(nodes[0])  # group(a.s(i) for i in ...)
        if not nodes:
            raise ValueError("group() needs at least one signature")
        self.nodes = tuple(_node(n) for n in nodes)

    def _plan(self, plan: _Plan, parent: _Output) -> _Output:
        tails: list[str] = []
        for node in self.nodes:
            out = node._plan(plan, parent)
            if out is None or out[0] != ONE:
                raise TypeError(f"a group member must end in one task, not a group: {node!r}")
            tails.append(out[1][0])
        return (ALL, tails)

    def _signatures(self) -> Iterable[Signature]:
        for node in self.nodes:
            yield from node._signatures()

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.nodes))})"


class chord(chain):
    """``chord(group(...), callback)``: the callback receives the list of the group's results."""

    def __init__(self, header: group | Iterable[Workflow], body: Workflow) -> None:
        super().__init__(header if isinstance(header, group) else group(header), body)


def _node(value: object) -> Workflow:
    if not isinstance(value, Workflow):
        raise TypeError(f"a workflow is built of signatures (task.s(...)), chains and groups, not {value!r}")
    return value


# -- enqueueing ---------------------------------------------------------------------------------------


class WorkflowRecord(msgspec.Struct, array_like=True):
    """What the result storage keeps of a workflow: its members, and which give its result."""

    members: list[str]
    output: tuple[str, list[str]] | None


class _Plan:
    """The members of one workflow as task records, in dependency order."""

    def __init__(self, app: AsyncOmniQ, workflow_id: str) -> None:
        self.app, self.workflow_id = app, workflow_id
        self.tasks: list[Task] = []

    def add(self, sig: Signature, parent: _Output) -> str:
        parents = () if parent is None else tuple(parent[1])
        options = sig.options
        if parents:
            if options.depends_on:
                raise ConfigurationError(
                    f"{sig!r}: depends_on is given by its place in the workflow; only a first member may add some"
                )
            options = options.merged(EnqueueOptions(depends_on=parents))
        mode = None if parent is None or sig.immutable else parent[0]
        # the parent's value goes before the signature's own arguments: check the call with a stand-in
        task = self.app._producer.build_checked(sig.name, sig.args, sig.kwargs, options, bind=(None,) if mode else ())
        headers = dict(task.headers or {})
        headers[WORKFLOW_HEADER] = self.workflow_id
        if mode is not None:
            headers[PARENT_HEADER] = mode
        task.headers = headers
        self.tasks.append(task)
        return task.id


async def enqueue_workflow(app: AsyncOmniQ, workflow: Workflow) -> WorkflowHandle:
    """Enqueue ``workflow``'s members on ``app`` in one batch, after its record; return its handle."""
    plan = _Plan(app, new_id())
    output = workflow._plan(plan, None)
    members = [t.id for t in plan.tasks]
    await app.connect()
    ttl = app.settings.result_ttl
    record = TaskResult(
        task_id=plan.workflow_id + RECORD_SUFFIX,
        status=TaskStatus.PENDING,
        payload=msgspec.msgpack.encode(WorkflowRecord(members, output)),
        expires_at=None if ttl is None else utcnow() + timedelta(seconds=ttl),
    )
    await app.result_storage.set(record)
    await app._producer.enqueue_tasks(plan.tasks)
    return WorkflowHandle(app, plan.workflow_id, members, output)


async def find_workflow(app: AsyncOmniQ, workflow_id: str) -> WorkflowHandle | None:
    """The handle of an enqueued workflow, from its record; None if there is none (or it expired)."""
    stored = await app.result_storage.get(workflow_id + RECORD_SUFFIX)
    if stored is None:
        return None
    record = msgspec.msgpack.decode(stored.payload, type=WorkflowRecord)
    return WorkflowHandle(app, workflow_id, record.members, record.output)


async def cancel_workflow(app: AsyncOmniQ, workflow_id: str) -> bool:
    """Cancel every member of the workflow not yet finished, last first; False if none was, or no such workflow."""
    handle = await find_workflow(app, workflow_id)
    if handle is None:
        return False
    cancelled = False
    for task_id in reversed(handle.task_ids):  # dependants before what they wait on: none becomes ready
        cancelled = await app._components.cancel(task_id) or cancelled
    return cancelled


# -- the handle -----------------------------------------------------------------------------------------


class WorkflowHandle:
    """An enqueued workflow: its id, its members' ids, and ``await get()`` for its result."""

    def __init__(self, app: AsyncOmniQ, workflow_id: str, task_ids: Sequence[str], output: _Output) -> None:
        self.app = app
        self.id = workflow_id
        #: every member's task id, in dependency order.
        self.task_ids = list(task_ids)
        self._output = output

    @property
    def result_ids(self) -> list[str]:
        """The members whose results make the workflow's: one (a chain, a chord) or several (a group)."""
        return [] if self._output is None else list(self._output[1])

    async def get(self, wait: bool = True, timeout: float | None = None) -> Any:
        """The workflow's result: the last member's value (chain, chord), or the list of values (group).

        Raises:
            WorkflowFailed: a member giving the result did not succeed (a parent's failure shows as
                ``DependencyFailed`` naming that parent).
            WorkflowNotFinished: not finished yet (``wait=False``), or still running after ``timeout`` s.
        """
        deadline = None if timeout is None else anyio.current_time() + timeout
        values = []
        for task_id in self.result_ids:
            left = None if deadline is None else max(0.0, deadline - anyio.current_time())
            result = await self.app.get_result(task_id, wait=wait, timeout=left)
            if result is None:
                raise WorkflowNotFinished(f"workflow {self.id} has not finished (member {task_id} has no result yet)")
            if not result.ok:
                raise WorkflowFailed(self.id, task_id, result.status, result.error)
            values.append(result.result)
        assert self._output is not None
        return values[0] if self._output[0] == ONE else values

    async def cancel(self) -> bool:
        """Cancel every member not yet finished (``app.cancel(workflow_id)``)."""
        return await cancel_workflow(self.app, self.id)

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id} ({len(self.task_ids)} tasks)>"


class SyncWorkflowHandle:
    """:class:`WorkflowHandle` for sync code: ``get`` and ``cancel`` block."""

    def __init__(self, app: OmniQ, handle: WorkflowHandle) -> None:
        self._app, self.handle = app, handle
        self.id, self.task_ids = handle.id, handle.task_ids

    @property
    def result_ids(self) -> list[str]:
        """See :attr:`WorkflowHandle.result_ids`."""
        return self.handle.result_ids

    def get(self, wait: bool = True, timeout: float | None = None) -> Any:
        """See :meth:`WorkflowHandle.get`."""
        return self._app._call(self.handle.get, wait, timeout)

    def cancel(self) -> bool:
        """See :meth:`WorkflowHandle.cancel`."""
        return self._app._call(self.handle.cancel)

    def __repr__(self) -> str:
        return f"<SyncWorkflowHandle {self.id} ({len(self.task_ids)} tasks)>"
