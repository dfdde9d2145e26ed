"""File backend: task queue, result storage and event storage in a directory.

Needs no server. On a local directory (a plain path, ``file:///abs/path``;
the default is ``<settings.base_dir>/files``) several processes on one host
may share it: a claim is an atomic rename into ``tasks/running/``, every
write is a temp file + fsync + rename (a crash never leaves a half-written
task visible), and ``flock`` stripes serialise changes to one task. Leases
expire like on every other engine, so a dead worker's tasks run again.

Any other fsspec URL works too (``memory://name``, ``s3://bucket/prefix``)
with ``pip install './packages/omniq-core[file]'``, but object stores have no atomic
rename and no locks: one consumer process only (see
:class:`~omniq.backends._file.store.FsspecStore`).

Wake-ups: a worker waiting for work (or a caller waiting for a result) in
the same thread as the writer is woken at once; across processes it notices
within ``poll_interval`` seconds.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from omniq.backends._file.records import EventFiles, ResultFiles
from omniq.backends._file.store import Notifier, Store, open_store
from omniq.backends._file.tasks import TaskFiles
from omniq.base import CONNECTION_ERRORS, BaseEventStorage, BaseResultStorage, BaseTaskQueue, Capability, map_exceptions
from omniq.errors import ConfigurationError, redact_url
from omniq.hookspecs import BackendSpec, hookimpl
from omniq.models import Outcome, OutcomeKind, Task, TaskEvent, TaskResult, TaskStatus

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from typing_extensions import Self

    from omniq.config import ComponentSettings, Settings

__all__ = ["FileEventStorage", "FileResultStorage", "FileTaskQueue"]

_T = TypeVar("_T")

#: folder under ``settings.base_dir`` used when no URL is given.
DEFAULT_SUBDIR = "files"
#: channel woken when a task may have become ready.
_WORK = "work"


class _FileComponent:
    """Store lookup, thread offloading and error mapping shared by the three components.

    Args:
        url: a directory (path, ``file://``) or any fsspec URL; None means
            ``.omniq/files`` in the current directory.
        fsync: fsync files and folders so an accepted write survives power
            loss (local directories only).
        poll_interval: seconds between checks for work or results written by
            other processes.
        storage_options: extra arguments for the fsspec file system.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        fsync: bool = True,
        poll_interval: float = 0.2,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ConfigurationError(f"poll_interval={poll_interval!r} is not valid: expected seconds > 0")
        self.url = url if url is not None else os.path.join(".omniq", DEFAULT_SUBDIR)
        self.fsync = fsync
        self.poll_interval = float(poll_interval)
        self.storage_options = dict(storage_options or {})
        # Resolving the URL does no I/O; connect() creates the folders.
        self._store = open_store(self.url, fsync=fsync, storage_options=self.storage_options)
        self._notifier = Notifier.for_store(self._store)
        self._ready = False
        self._bind(self._store)

    @classmethod
    def from_settings(cls, component: ComponentSettings, settings: Settings) -> Self:
        """Use the component's URL, or ``<base_dir>/files`` when it has none."""
        url = component.url or os.fspath(settings.base_dir / DEFAULT_SUBDIR)
        return cls(url=url, **component.options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={redact_url(self.url)!r})"

    @property
    def multi_process(self) -> bool:
        """Whether several processes may share this root (a local directory with flock)."""
        return self._store.multi_process

    def _bind(self, store: Store) -> None:
        """Build the component's operations object on ``store``."""

    async def connect(self) -> None:
        """Create the folders (idempotent)."""
        if not self._ready:
            with map_exceptions(CONNECTION_ERRORS, url=self.url):
                await anyio.to_thread.run_sync(self._store.create_layout)
            self._ready = True

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""
        await anyio.lowlevel.checkpoint()

    async def _run(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run one batch operation in a worker thread, translating OS errors."""
        await self.connect()
        store = self._store

        def call() -> _T:
            with store.session():
                return func(*args)

        with map_exceptions(CONNECTION_ERRORS, url=self.url):
            return await anyio.to_thread.run_sync(call)

    def _notify(self, *channels: str) -> None:
        if channels:
            self._notifier.notify(channels)


class FileTaskQueue(_FileComponent, BaseTaskQueue):
    """Task queue in a directory; claims are atomic renames."""

    backend_name: ClassVar[str] = "file"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {Capability.DURABLE, Capability.MULTI_PROCESS, Capability.FUSED_RESULTS}
    )
    _ops: TaskFiles

    def _bind(self, store: Store) -> None:
        self._ops = TaskFiles(store)

    async def enqueue(self, task: Task) -> str:
        """Store a new PENDING task (or return the id holding its unique key)."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store many tasks in one thread hop (one fsync per file, one per folder)."""
        if not tasks:
            return []
        ids = await self._run(lambda: self._ops.enqueue_many(tasks))
        self._notify(_WORK)
        return ids

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` due tasks by renaming them into ``tasks/running/``."""
        return await self._run(lambda: self._ops.claim(queues, limit, lease, worker_id))

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Return when woken by an enqueue in this thread, when a due task shows up, or after ``timeout``."""
        with self._notifier.watch(_WORK) as event, anyio.move_on_after(timeout):
            while True:
                if await self._run(lambda: self._ops.ready_exists(queues)):
                    return
                with anyio.move_on_after(self.poll_interval):
                    await event.wait()
                if event.is_set():
                    return

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push back the deadline of every lease still held."""
        if not leases:
            return set()
        return await self._run(lambda: self._ops.extend(leases, lease))

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True for a :class:`FileResultStorage` on the same root."""
        return isinstance(results, FileResultStorage) and results._store.key == self._store.key

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply token-checked outcomes; fused, results are written under the same task lock."""
        if not outcomes:
            return []
        fused = results if isinstance(results, FileResultStorage) and self.can_fuse_results(results) else None
        ops = fused._ops if fused is not None else None
        accepted = await self._run(lambda: self._ops.finish(outcomes, ops))
        requeued = any(ok and o.kind in _REQUEUING for ok, o in zip(accepted, outcomes, strict=True))
        self._notify(*([_WORK] if requeued else []))
        if fused is not None:
            fused._notify(*(f"result:{o.task_id}" for ok, o in zip(accepted, outcomes, strict=True) if ok and o.result))
        return accepted

    async def get(self, task_id: str) -> Task | None:
        """Return the task, or None."""
        return (await self.get_many([task_id]))[0]

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks in one thread hop."""
        return await self._run(lambda: self._ops.get_many(task_ids))

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue."""
        return await self._run(lambda: self._ops.count(status, queue))

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task; its lease, if any, is lost."""
        return await self._run(lambda: self._ops.cancel(task_id))

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal."""
        changed = await self._run(lambda: self._ops.set_paused(task_id, paused))
        if changed and not paused:
            self._notify(_WORK)
        return changed

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks (all by default); return how many."""
        return await self._run(lambda: self._ops.purge(queue, statuses))

    async def recover(self) -> list[Task]:
        """Requeue running tasks whose lease passed; also repairs what a crashed process left behind."""
        recovered = await self._run(self._ops.recover)
        if any(task.status is TaskStatus.PENDING for task in recovered):
            self._notify(_WORK)
        return recovered

    # Last in the class: from here on the name ``list`` is this method, not the builtin.
    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> builtins.list[Task]:
        """Return tasks filtered by status and queue, newest first (reads every matching file)."""
        return await self._run(lambda: self._ops.list_tasks(status, queue, limit, offset))


#: outcomes that put the task back to PENDING (a waiting worker may want it).
_REQUEUING = frozenset({OutcomeKind.RETRY, OutcomeKind.RELEASE, OutcomeKind.RESCHEDULE})


class FileResultStorage(_FileComponent, BaseResultStorage):
    """Result storage in a directory: one file per task."""

    backend_name: ClassVar[str] = "file"
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.DURABLE, Capability.MULTI_PROCESS})
    _ops: ResultFiles

    def _bind(self, store: Store) -> None:
        self._ops = ResultFiles(store)

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) a result and wake its waiters."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results in one thread hop."""
        if results:
            await self._run(lambda: self._ops.set_many(results))
            self._notify(*(f"result:{result.task_id}" for result in results))

    async def get(self, task_id: str) -> TaskResult | None:
        """Return the result unless missing or expired."""
        return await self._run(lambda: self._ops.get(task_id))

    async def wait(self, task_id: str, timeout: float | None) -> TaskResult | None:
        """Wait for the result: woken at once by a writer in this thread, else polled."""
        with anyio.move_on_after(float("inf") if timeout is None else timeout):
            while True:
                # Watch before reading, so a result written in between still wakes us.
                with self._notifier.watch(f"result:{task_id}") as event:
                    result = await self.get(task_id)
                    if result is not None:
                        return result
                    with anyio.move_on_after(self.poll_interval):
                        await event.wait()
        return await self.get(task_id)

    async def delete(self, task_id: str) -> bool:
        """Delete a result; True if there was a live one."""
        return await self._run(lambda: self._ops.delete(task_id))

    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all); return how many."""
        return await self._run(lambda: self._ops.purge(expired_only))


class FileEventStorage(_FileComponent, BaseEventStorage):
    """Event storage in a directory: one file per appended batch."""

    backend_name: ClassVar[str] = "file"
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.DURABLE, Capability.MULTI_PROCESS})
    _ops: EventFiles

    def _bind(self, store: Store) -> None:
        self._ops = EventFiles(store)

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Store a batch of events as one file."""
        if events:
            await self._run(lambda: self._ops.append(events))

    async def query(
        self,
        *,
        task_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Return events matching all filters (``since <= timestamp < until``), oldest first."""
        return await self._run(lambda: self._ops.query(task_id, types, since, until, limit))

    async def purge(self, *, before: datetime | None = None) -> int:
        """Delete events with ``timestamp < before`` (all when None); return how many."""
        return await self._run(lambda: self._ops.purge(before))


# -- plugin registration (entry point ``file = "omniq.backends.file"``) ----------------------------------


def _spec(cls: type[_FileComponent]) -> BackendSpec:
    return BackendSpec(
        name="file",
        path=f"omniq.backends.file:{cls.__name__}",
        distribution="omniq-core",
        capabilities=getattr(cls, "capabilities", frozenset()),
    )


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """Register the file task queue."""
    return [_spec(FileTaskQueue)]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """Register the file result storage."""
    return [_spec(FileResultStorage)]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """Register the file event storage."""
    return [_spec(FileEventStorage)]
