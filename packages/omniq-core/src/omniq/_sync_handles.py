"""What sync code holds besides the app: a task handle whose ``enqueue`` blocks, and a worker pool.

Both are thin, like :class:`~omniq.sync.OmniQ`: each call hands the async
object's coroutine to the app's loop thread. ``omniq.sync`` re-exports them.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from typing_extensions import ParamSpec

from omniq._options import EnqueueOptions, TaskOptions
from omniq.workflows import Signature

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from omniq._tasks import TaskFunction
    from omniq.sync import OmniQ
    from omniq.worker.pool import AsyncWorkerPool

__all__ = ["SyncTaskFunction", "SyncWorkerPool"]

P = ParamSpec("P")
R = TypeVar("R")


class SyncTaskFunction(Generic[P, R]):
    """A registered task for sync code: ``.enqueue(...)`` blocks and returns the task id."""

    def __init__(self, app: OmniQ, handle: TaskFunction[P, R]) -> None:
        self.app = app
        self.handle = handle
        self.name = handle.name
        self.func = handle.func
        functools.update_wrapper(self, handle.func)  # copies __doc__, __name__...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function directly, in this process."""
        return self.handle.func(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue a call with the decorator's options; returns the task id."""
        return self.app.enqueue_call(self.name, args, kwargs, self.handle.default_options)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this call for a workflow; see :meth:`omniq.TaskFunction.s`."""
        return Signature(self.app, self.name, args, kwargs, self.handle.default_options)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature; see :meth:`omniq.TaskFunction.si`."""
        return Signature(self.app, self.name, args, kwargs, self.handle.default_options, immutable=True)

    def options(self, **options: Unpack[TaskOptions]) -> _SyncBound[P]:
        """Return a handle whose ``enqueue`` uses extra options (``delay``, ``queue``, ...)."""
        return _SyncBound(
            self.app, self.handle, self.handle.default_options.merged(EnqueueOptions.from_kwargs(options))
        )


class _SyncBound(Generic[P]):
    def __init__(self, app: OmniQ, handle: TaskFunction[P, Any], options: EnqueueOptions) -> None:
        self._app, self._handle, self._options = app, handle, options

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue a call with these options; returns the task id."""
        return self._app.enqueue_call(self._handle.name, args, kwargs, self._options)


class SyncWorkerPool:
    """A worker pool driven from sync code.

    ``start()`` returns once the pool runs in the background (on the app's
    loop thread); ``stop(timeout)`` stops it gracefully and waits; ``run()``
    blocks until it stops. ``threading.Thread(target=pool.start)`` works too.
    """

    def __init__(self, app: OmniQ, pool: AsyncWorkerPool) -> None:
        self._app = app
        self.pool = pool
        self._future: Future[None] | None = None

    def start(self) -> None:
        """Start the pool in the background and return once it is claiming."""
        if self._future is None:
            self._future = self._app._portal.portal.start_task_soon(self.pool.start)
            self._app._call(self.pool.wait_started)

    def run(self) -> None:
        """Start the pool and block until it stops (burst mode: until drained)."""
        self.start()
        assert self._future is not None
        self._future.result()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, let in-flight tasks finish (up to ``timeout``), release the rest, wait."""
        self.pool.request_stop()
        if timeout is not None:
            self.pool.shutdown_grace = timeout
        if self._future is not None:
            self._future.result()

    @property
    def running(self) -> bool:
        """Whether the pool is running."""
        return self.pool.running

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
