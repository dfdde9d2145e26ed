"""Where task functions run: on the loop, in a thread pool, or in child processes.

Timeouts differ by executor, and the difference is documented:

* async: the coroutine is cancelled at its next await.
* thread: the task is failed and its slot released at once, but Python
  cannot stop a thread: the function keeps running in the background until
  it returns (its outcome is discarded).
* process: the child running the task is killed and replaced.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from omniq.context import RUNNING
from omniq.errors import TaskTimeoutError

if TYPE_CHECKING:
    from omniq.models import Task, TaskProgress

__all__ = ["Executor", "ProcessExecutor", "ThreadExecutor", "threads_in_tasks"]

_in_tasks = 0  # threads inside a task function right now (a timed-out or cut-off one stays in)
_in_tasks_lock = threading.Lock()


def threads_in_tasks() -> int:
    """How many threads are running a sync task function right now (idle pool threads are not counted)."""
    return _in_tasks


def _counted(call: Callable[[], Any]) -> Any:
    global _in_tasks
    with _in_tasks_lock:
        _in_tasks += 1
    try:
        return call()
    finally:
        with _in_tasks_lock:
            _in_tasks -= 1


class Executor:
    """Runs coroutine functions on the loop and sync functions in worker threads."""

    def __init__(self, concurrency: int) -> None:
        self._limiter = anyio.CapacityLimiter(concurrency)

    async def start(self) -> None:
        """Prepare resources (child processes for the process executor)."""

    async def close(self) -> None:
        """Release resources."""

    async def run(
        self,
        name: str,
        func: Callable[..., Any],
        is_async: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Run one call, raising TaskTimeoutError when it overruns ``timeout``."""
        if timeout is None:  # the common case: no cancel scope to set up per task
            if is_async:
                return await func(*args, **kwargs)
            return await self._run_sync(name, func, args, kwargs)
        try:
            with anyio.fail_after(timeout):
                if is_async:
                    return await func(*args, **kwargs)
                return await self._run_sync(name, func, args, kwargs)
        except TimeoutError as exc:
            if isinstance(exc, TaskTimeoutError):
                raise
            raise TaskTimeoutError(f"task {name} ran longer than its timeout of {timeout} s") from exc

    async def _run_sync(
        self, name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return await anyio.to_thread.run_sync(
            functools.partial(_counted, functools.partial(func, *args, **kwargs)),
            limiter=self._limiter,
            abandon_on_cancel=True,
        )


class ThreadExecutor(Executor):
    """Every function in the thread pool, coroutine functions too (each on its own short-lived loop)."""

    async def run(
        self,
        name: str,
        func: Callable[..., Any],
        is_async: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Run one call in a thread."""
        if is_async:
            target = functools.partial(anyio.run, functools.partial(func, *args, **kwargs))
            return await super().run(name, target, False, (), {}, timeout)
        return await super().run(name, func, False, args, kwargs, timeout)


def _for_child(running: tuple[Task, str, object] | None) -> tuple[Task, str] | None:
    """What the child needs of the parent's ``RUNNING``: the task and worker, not the parent's run record."""
    return None if running is None else (running[0], running[1])


class _ChildRun:
    """The run record a child gives ``omniq.current_task()``: reports go to the parent over the pipe.

    ``cancelled`` stays False: a cancelled process-pool task is killed with its child.
    """

    cancelled = False

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def report_progress(self, progress: TaskProgress) -> None:
        self.conn.send(("progress", progress))


def _die_with_parent(parent_end: Connection | None, parent_pid: int | None) -> None:
    """Make this child end with the worker that forked it, even when the worker is SIGKILLed.

    On Linux the kernel sends SIGKILL to the child when its parent dies (``PR_SET_PDEATHSIG``;
    the pool forks from the thread that runs its loop, which lives as long as the pool).
    Everywhere, the child closes its copy of the parent's end of the pipe, so an idle child's
    ``recv()`` ends with EOF when the parent is gone.
    """
    if parent_end is not None:
        parent_end.close()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no libc to call: EOF on the pipe is the fallback
            pass
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before the call above
        os._exit(1)


def _child_main(
    conn: Connection,
    resolve: Callable[[str], Callable[..., Any]],
    parent_end: Connection | None = None,
    parent_pid: int | None = None,
) -> None:
    """Loop of a child process: receive (name, args, kwargs), send back ("ok", value) or ("error", exc)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import asyncio
    import inspect
    import pickle

    _die_with_parent(parent_end, parent_pid)
    run = _ChildRun(conn)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        name, args, kwargs, running = message
        RUNNING.set(None if running is None else (*running, run))  # omniq.current_task() in the child too
        try:
            func = resolve(name)
            value = func(*args, **kwargs)
            if inspect.isawaitable(value):
                value = asyncio.run(_await(value))
            reply: tuple[str, Any] = ("ok", value)
        except BaseException as exc:
            reply = ("error", exc)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            conn.send(("error", TypeError(f"the result of {name} cannot be sent back from the child process: {exc}")))


async def _await(value: Any) -> Any:
    return await value


class _Child:
    def __init__(self, context: Any, resolve: Callable[[str], Callable[..., Any]]) -> None:
        self.conn, child_conn = context.Pipe()
        # The child must not outlive the worker (a task left running in an orphan would run twice
        # once the lease expires): see _die_with_parent.
        self.process = context.Process(
            target=_child_main, args=(child_conn, resolve, self.conn, os.getpid()), daemon=True
        )
        self.process.start()
        child_conn.close()

    def kill(self) -> None:
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(5)
        self.conn.close()


class ProcessExecutor(Executor):
    """A pool of forked child processes; a child that overruns its timeout is killed and replaced.

    Children are forked from the worker, so they know every task the app
    registered; arguments and return values cross the pipe with pickle.
    """

    def __init__(self, concurrency: int, resolve: Callable[[str], Callable[..., Any]]) -> None:
        super().__init__(concurrency)
        self._resolve = resolve
        self._context = multiprocessing.get_context("fork")
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()

    def _spawn(self) -> _Child:
        child = _Child(self._context, self._resolve)
        self._all.add(child)
        return child

    async def run(
        self,
        name: str,
        func: Callable[..., Any],
        is_async: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Run one call in a child process."""
        async with self._limiter:
            child = self._idle.pop() if self._idle else self._spawn()
            healthy = False
            try:
                with anyio.fail_after(timeout):
                    running = RUNNING.get()
                    child.conn.send((name, args, kwargs, _for_child(running)))
                    status, value = await anyio.to_thread.run_sync(child.conn.recv, abandon_on_cancel=True)
                    while status == "progress":  # omniq.report_progress in the child
                        report = getattr(running[2], "report_progress", None) if running else None
                        if report is not None:
                            report(value)
                        status, value = await anyio.to_thread.run_sync(child.conn.recv, abandon_on_cancel=True)
                healthy = True
            except TimeoutError as exc:
                raise TaskTimeoutError(
                    f"task {name} ran longer than its timeout of {timeout} s; its process was killed"
                ) from exc
            except (EOFError, OSError) as exc:
                raise RuntimeError(
                    f"the child process running {name} died (exit code {child.process.exitcode})"
                ) from exc
            finally:
                if healthy:
                    self._idle.append(child)
                else:
                    self._all.discard(child)
                    child.kill()
        if status == "error":
            raise value
        return value

    async def close(self) -> None:
        """Stop every child."""
        for child in list(self._all):
            with contextlib.suppress(OSError):  # a dead child's pipe is already closed
                child.conn.send(None)
        for child in list(self._all):
            child.process.join(2)
            child.kill()
        self._all.clear()
        self._idle.clear()
