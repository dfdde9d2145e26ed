"""FastAPI integration (``omniq-core[fastapi]``): the app's lifespan, and a dependency.

::

    from fastapi import FastAPI
    from omniq import AsyncOmniQ
    from omniq.contrib.fastapi import OmniQDep, lifespan

    omniq = AsyncOmniQ()
    app = FastAPI(lifespan=lifespan(omniq, worker=True))

    @app.post("/reports")
    async def create_report(q: OmniQDep) -> dict[str, str]:
        return {"task_id": await q.enqueue("build_report")}

* :func:`lifespan` connects the :class:`~omniq.AsyncOmniQ` at startup and
  closes it at shutdown. With ``worker=True`` it also runs a worker pool on
  the server's event loop for the app's lifetime: the server is up once the
  pool claims, and at shutdown the pool stops the way ``omniq worker`` does
  on SIGTERM (no new claims; in-flight tasks get ``stop_timeout`` seconds,
  by default ``settings.shutdown_grace``; the rest are released for another
  worker), before the app is closed. The server owns the signals (uvicorn
  turns SIGTERM into the lifespan's shutdown), so the pool installs no
  handlers of its own. Each server process runs its own pool (``uvicorn
  --workers 4``: four pools). Without ``worker``, run ``omniq worker``
  beside the server, on the same settings.
* It composes with a lifespan of yours, either way round:
  ``lifespan(omniq, inner=your_lifespan)`` runs yours inside (the app is
  connected during its startup and still connected during its shutdown;
  the state it yields is the lifespan's state), or, inside your own
  lifespan, ``async with running(omniq, app, worker=True): yield``.
* :func:`get_omniq` (``Depends(get_omniq)``, or the :data:`OmniQDep`
  annotation) hands the app to a path operation; both helpers keep it at
  ``app.state.omniq``.

A worker pool that fails after it started (a bug: engine errors are retried
with backoff inside the pool) is logged on ``omniq.contrib.fastapi``; the
server goes on serving, and its tasks wait for another worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import anyio

try:
    from fastapi import Depends, FastAPI, Request
except ImportError as exc:  # pragma: no cover - the extra is not installed (tests/contrib checks the message)
    raise ImportError(
        f"omniq.contrib.fastapi needs FastAPI: pip install './packages/omniq-core[fastapi]' ({exc})"
    ) from exc

from omniq.app import AsyncOmniQ

if TYPE_CHECKING:
    from omniq.worker.pool import AsyncWorkerPool

__all__ = ["STATE_KEY", "Lifespan", "OmniQDep", "get_omniq", "lifespan", "running"]

logger = logging.getLogger("omniq.contrib.fastapi")

#: the attribute of ``app.state`` that holds the AsyncOmniQ.
STATE_KEY = "omniq"

#: a FastAPI lifespan: called with the app, an async context manager around its life (what it yields is the state).
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


@asynccontextmanager
async def running(
    omniq: AsyncOmniQ,
    app: FastAPI | None = None,
    *,
    worker: bool = False,
    concurrency: int | None = None,
    queues: Sequence[str] | str | None = None,
    pool: str | None = None,
    stop_timeout: float | None = None,
) -> AsyncIterator[AsyncOmniQ]:
    """Keep ``omniq`` connected (and, with ``worker``, a worker pool running) for the block; for your own lifespan.

    Args:
        omniq: the app; an :class:`~omniq.AsyncOmniQ`, as it is used on the server's loop.
        app: the FastAPI app whose ``state.omniq`` is set (for :func:`get_omniq`), if any.
        worker: run a worker pool on this event loop while the block runs.
        concurrency: the pool's tasks in flight (default ``settings.max_workers``).
        queues: the queues it consumes (default ``settings.queues``).
        pool: ``async`` (the default: coroutines on the loop, sync functions in threads), ``thread`` or ``process``.
        stop_timeout: seconds in-flight tasks get when the block ends (None: ``settings.shutdown_grace``).

    Raises:
        TypeError: ``omniq`` is a sync :class:`~omniq.OmniQ` (its connections live on its own loop thread).
    """
    if not isinstance(omniq, AsyncOmniQ):
        raise TypeError(f"expected an AsyncOmniQ, got {type(omniq).__name__}: build the app with omniq.AsyncOmniQ()")
    # Built before connecting: a bad pool argument is a ConfigurationError before anything is opened.
    workers = omniq.worker(concurrency, queues=queues, pool=pool) if worker else None
    await omniq.connect()
    try:
        if app is not None:
            setattr(app.state, STATE_KEY, omniq)
        if workers is None:
            yield omniq
            return
        # The pool runs in a task of its own, not in a task group around the yield: an exception from the
        # block (your startup, or a request's) then reaches the server as it is, not wrapped in a group.
        runner = await _start_pool(workers)
        try:
            yield omniq
        finally:
            with anyio.CancelScope(shield=True):  # bounded: the pool cancels what outlives the grace period
                await workers.stop(stop_timeout)
                await asyncio.wait({runner})  # (a failure was logged when it happened)
    finally:
        with anyio.CancelScope(shield=True):
            await omniq.close()


def lifespan(
    omniq: AsyncOmniQ,
    *,
    inner: Lifespan | None = None,
    worker: bool = False,
    concurrency: int | None = None,
    queues: Sequence[str] | str | None = None,
    pool: str | None = None,
    stop_timeout: float | None = None,
) -> Lifespan:
    """Return a lifespan for ``FastAPI(lifespan=...)`` that connects ``omniq`` (and runs a worker) around ``inner``.

    Args:
        omniq: the app (an :class:`~omniq.AsyncOmniQ`), stored at ``app.state.omniq``.
        inner: your own lifespan, run inside: OmniQ is connected before its startup and closed after its
            shutdown; what it yields is the lifespan's state.
        worker: run a worker pool on the server's loop for the app's lifetime (see :func:`running`).
        concurrency: the pool's tasks in flight (default ``settings.max_workers``).
        queues: the queues it consumes (default ``settings.queues``).
        pool: ``async`` (the default), ``thread`` or ``process``.
        stop_timeout: seconds in-flight tasks get at shutdown (None: ``settings.shutdown_grace``).
    """

    @asynccontextmanager
    async def omniq_lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with running(
            omniq,
            app,
            worker=worker,
            concurrency=concurrency,
            queues=queues,
            pool=pool,
            stop_timeout=stop_timeout,
        ):
            if inner is None:
                yield None
            else:
                async with inner(app) as state:
                    yield state

    return omniq_lifespan


def get_omniq(request: Request) -> AsyncOmniQ:
    """The app that :func:`lifespan` or :func:`running` stored (a dependency: ``Depends(get_omniq)``).

    Raises:
        RuntimeError: neither ran for this FastAPI app.
    """
    omniq = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(omniq, AsyncOmniQ):
        raise RuntimeError(
            "no OmniQ app on this FastAPI app: create it with FastAPI(lifespan=omniq.contrib.fastapi.lifespan(app)) "
            "or enter omniq.contrib.fastapi.running(app, fastapi_app) in your lifespan"
        )
    return omniq


#: a path operation's parameter annotated ``q: OmniQDep`` receives the app (:func:`get_omniq`).
OmniQDep = Annotated[AsyncOmniQ, Depends(get_omniq)]


async def _start_pool(workers: AsyncWorkerPool) -> asyncio.Task[None]:
    """Run the pool in a task; return it once the pool claims, or raise what stopped it before."""
    runner = asyncio.create_task(workers.start(), name=f"omniq worker {workers.worker_id}")
    started = asyncio.create_task(workers.wait_started())
    try:
        await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled while starting (the server gave up): the pool goes too
        runner.cancel()
        raise
    finally:
        started.cancel()
    if started.cancelled() or not started.done():
        await runner  # raises what stopped it
        raise RuntimeError(f"the worker {workers.worker_id} stopped before it started")
    runner.add_done_callback(_log_failure)
    return runner


def _log_failure(runner: asyncio.Task[None]) -> None:
    if not runner.cancelled() and (exc := runner.exception()) is not None:
        logger.error("the in-process worker stopped on an error; the app goes on without it", exc_info=exc)
