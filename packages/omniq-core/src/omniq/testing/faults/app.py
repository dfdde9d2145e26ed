"""The app the fault suite runs in real worker processes: ``omniq worker omniq.testing.faults.app:app``.

It is configured by the ``OMNIQ_*`` variables of the worker's environment (the
backend's ``fault_env``). Each task appends ``"<n> <pid>"`` to the file named by
``$FAULT_LOG`` when it completes, so a test counts how many times each task
really ran to completion (:meth:`Cluster.completions <omniq.testing.faults.Cluster.completions>`).
Tests enqueue by name; a task name that is not here (``"not.registered"``) is
the suite's unknown task.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from omniq import OmniQ

__all__ = ["app", "first_run", "record"]

app = OmniQ()


def record(n: int) -> None:
    """Append ``"<n> <pid>"`` to ``$FAULT_LOG``."""
    with open(os.environ["FAULT_LOG"], "a") as log:
        log.write(f"{n} {os.getpid()}\n")


def first_run(marker: str) -> bool:
    """Create the file ``marker``; False when it existed already (a task's later run)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


@app.task(name="record")
def record_task(n: int) -> int:
    """Record ``n`` at once."""
    record(n)
    return n


@app.task(name="slow")
def slow(n: int, seconds: float) -> int:
    """Sleep ``seconds`` (a thread blocked in the task), then record ``n``."""
    time.sleep(seconds)
    record(n)
    return n


@app.task(name="held_once")
async def held_once(n: int, seconds: float) -> int:
    """Sleep ``seconds`` on the first run only (``$FAULT_LOG.held-<n>`` remembers it), then record ``n``."""
    if await asyncio.to_thread(first_run, f"{os.environ['FAULT_LOG']}.held-{n}"):
        await asyncio.sleep(seconds)
    record(n)
    return n


@app.task(name="suicide", max_retries=1)
def suicide() -> None:
    """The poison task: SIGKILL its own process (the worker's, or its process-pool child)."""
    os.kill(os.getpid(), signal.SIGKILL)
