"""procrastinate's four scenarios; run with benchmarks/.venvs/procrastinate/bin/python.

Also the worker: ``procrastinate --app procrastinate_bench.app worker --concurrency 10`` (cwd = peers/).
Environment: BENCH_URL (a database of its own, created and dropped by run.py), BENCH_WORKDIR.
procrastinate's defaults otherwise (LISTEN/NOTIFY on, job rows kept with their status; no return values).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import procrastinate
from common import Channel, count_noop, drain_rate, emit, measure_latency_async, peer_args, report_ping, spawn, stop

HERE = os.path.dirname(os.path.abspath(__file__))  # peers/: the worker's cwd
BIN = os.path.dirname(os.path.abspath(sys.executable))  # this venv's scripts

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("BENCH_URL", "")))


@app.task(name="noop")
async def noop() -> None:
    count_noop()


@app.task(name="ping")
async def ping(seq: int) -> None:
    report_ping(seq)


async def main(args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {}
    log = os.path.join(os.environ["BENCH_WORKDIR"], "procrastinate-worker.log")
    worker = [
        os.path.join(BIN, "procrastinate"),
        "--log-level",
        "warning",
        "--app",
        "procrastinate_bench.app",
        "worker",
        "--concurrency",
        str(args.concurrency),
    ]
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        # 1. one at a time, into another queue (never consumed; the database is dropped by the runner)
        single = noop.configure(queue="single")
        start = time.perf_counter()
        for _ in range(args.n_single):
            await single.defer_async()
        result["enqueue_single"] = args.n_single / (time.perf_counter() - start)

        # 2. bulk: one batch_defer_async call; 3. drain and 4. latency: one worker process (default queue only)
        start = time.perf_counter()
        await noop.batch_defer_async(*({} for _ in range(args.n_bulk)))
        result["enqueue_bulk"] = args.n_bulk / (time.perf_counter() - start)

        channel = Channel()
        proc = spawn([*worker, "--queues", "default"], channel.env(args.n_bulk), HERE, log)
        loop = asyncio.get_running_loop()
        try:
            result["drain"] = drain_rate(await loop.run_in_executor(None, channel.receive, args.timeout))
            result.update(
                await measure_latency_async(
                    channel, lambda seq: ping.defer_async(seq=seq), args.n_latency, args.timeout
                )
            )
        finally:
            stop(proc)
            channel.close()
    from importlib.metadata import version

    result["version"] = version("procrastinate")
    result["notes"] = (
        f"PsycopgConnector, procrastinate worker --concurrency {args.concurrency}; bulk = one batch_defer_async call"
    )
    return result


if __name__ == "__main__":
    import procrastinate_bench  # the worker knows the tasks by this module's name, not __main__

    emit(asyncio.run(procrastinate_bench.main(peer_args())))
