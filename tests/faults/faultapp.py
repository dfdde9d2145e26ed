"""The app the fault tests of this directory run in real worker processes (configured by OMNIQ_* variables).

It is the published fault suite's app (:mod:`omniq.testing.faults.app`: ``record``, ``slow``,
``held_once``, ``suicide``) with the tasks of the tests here added. Each task appends
"<n> <pid>\n" to $FAULT_LOG when it completes, so a test can count how many times each task
really ran to completion.
"""

from __future__ import annotations

import asyncio
import os
import time

from omniq import current_task
from omniq.testing.faults.app import app, first_run, record as _record

__all__ = ["app"]


def _span(line: str) -> None:
    with open(f"{os.environ['FAULT_LOG']}.spans", "a") as log:
        log.write(line + "\n")


@app.task(name="limited")
async def limited(n: int, seconds: float) -> int:
    """Logs "start|end <n> <time> <pid>" around its sleep (the test enqueues it with a concurrency limit)."""
    _span(f"start {n} {time.time()} {os.getpid()}")
    await asyncio.sleep(seconds)
    _span(f"end {n} {time.time()} {os.getpid()}")
    _record(n)
    return n


@app.task(name="single")
async def single(n: int, seconds: float) -> int:
    """Logs its start and sleeps on its first run only (the test enqueues it with a concurrency limit of 1)."""
    _span(f"start {n} {time.time()} {os.getpid()}")
    if await asyncio.to_thread(first_run, f"{os.environ['FAULT_LOG']}.single-{n}"):
        await asyncio.sleep(seconds)
    _record(n)
    return n


@app.task(name="progress_until")
def progress_until(marker: str) -> str:
    """Reports 3 of 10 steps, then waits (at most a minute) until ``marker`` exists; reports 10 of 10."""
    from omniq import report_progress

    report_progress(1, 10)
    report_progress(3, 10, "step 3: exporting")  # the latest of the two is what a reader sees
    give_up = time.monotonic() + 60
    while not os.path.exists(marker) and time.monotonic() < give_up:
        time.sleep(0.05)
    report_progress(10, 10, "done")
    return "finished"


# -- workflows (test_workflows.py) ---------------------------------------------------------------------


@app.task(name="add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="total")
def total(values: list[int]) -> int:
    return sum(values)


@app.task(name="fail_with", max_retries=0)
def fail_with(value: object, message: str) -> None:
    raise ValueError(message)


@app.task(name="workflow_of")
def workflow_of(value: object) -> list[object]:
    return [value, current_task().workflow_id]


@app.task(name="wait_for")
def wait_for(marker: str) -> str:
    """Runs until ``marker`` exists or the run is cancelled."""
    while not os.path.exists(marker) and not current_task().cancelled:
        time.sleep(0.05)
    return "done"
