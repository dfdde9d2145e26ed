"""OmniQ's file backend: task queue, result storage and event storage in a directory.

Needs no server. On a local directory (a plain path, ``file:///abs/path``;
the default is ``<settings.base_dir>/files``) several processes on one host
may share it: a claim is an atomic rename into ``tasks/running/``, every
write is a temp file + fsync + rename (a crash never leaves a half-written
task visible), and ``flock`` stripes serialise changes to one task. Leases
expire like on every other engine, so a dead worker's tasks run again.

Any other fsspec URL works too (``memory://name``, ``s3://bucket/prefix``)
with ``pip install './packages/omniq-core[file]'``, but object stores have no atomic
rename and no locks: one consumer process only (see
:class:`~omniq.backends.file.fsspec_store.FsspecStore`).

Flow control (rate and concurrency limits, queue pause) holds across every
process on a local directory: a limit key's state is a file read and
rewritten under a lock stripe taken inside the claim's task lock (see
:mod:`.flow`).

Dependencies (``Capability.DEPENDENCIES``): a task enqueued with
``depends_on`` waits in ``tasks/waiting/``, never listed by a claim, until the
step that ends its last dependency moves it to its queue folder; the
dependency's task lock serialises that step with the dependant's registration
(see :mod:`.dependencies`).

Wake-ups: a worker waiting for work (or a caller waiting for a result) in
the same thread as the writer is woken at once; across processes it notices
within ``poll_interval`` seconds.

Modules: :mod:`.connection` (URLs, errors, the root a component holds),
:mod:`.layout` (every folder and file name), :mod:`.store` and
:mod:`.fsspec_store` (the storage drivers), :mod:`.wakeups`, and the
synchronous operations the components run in a worker thread:
:mod:`.task_files`, :mod:`.enqueue`, :mod:`.leases`, :mod:`.flow`,
:mod:`.dependencies` (tasks waiting on others), :mod:`.management`,
:mod:`.overview` (pages of tasks, queue statistics),
:mod:`.workers` (the worker registry: ``workers/<id>.worker``),
:mod:`.result_files`, :mod:`.event_files`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins import lazy_exports

if TYPE_CHECKING:
    from omniq.backends.file.event_storage import FileEventStorage
    from omniq.backends.file.result_storage import FileResultStorage
    from omniq.backends.file.task_queue import FileTaskQueue

__all__ = ["FileEventStorage", "FileResultStorage", "FileTaskQueue"]

__getattr__ = lazy_exports(
    __name__,
    {
        "FileEventStorage": "omniq.backends.file.event_storage",
        "FileResultStorage": "omniq.backends.file.result_storage",
        "FileTaskQueue": "omniq.backends.file.task_queue",
    },
)
