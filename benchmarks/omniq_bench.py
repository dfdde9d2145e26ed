"""OmniQ's four scenarios; run with the project's interpreter (omniq and its backends installed).

    OMNIQ_BACKEND=sqlite OMNIQ_BASE_DIR=/tmp/x python benchmarks/omniq_bench.py --n-single 2000 ...

The engine comes from the OMNIQ_* environment (run.py sets it); everything else is OmniQ's defaults.
Prints one ``BENCH_RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import anyio

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import Channel, drain_rate, emit, measure_latency_async, spawn, stop  # noqa: E402
from omniq_app import app, noop, ping  # noqa: E402

from omniq.models import TaskStatus  # noqa: E402


async def main(args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {}
    worker_cmd = [
        sys.executable,
        "-m",
        "omniq",
        "--log-level",
        "WARNING",
        "worker",
        "omniq_app:app",
        "--concurrency",
        str(args.concurrency),
    ]
    log = os.path.join(args.workdir, "omniq-worker.log")
    async with app:
        await app.purge()
        # 1. one at a time (the buffered enqueued-events are flushed inside the timing)
        start = time.perf_counter()
        for _ in range(args.n_single):
            await noop.enqueue()
        await app.flush_events()
        result["enqueue_single"] = args.n_single / (time.perf_counter() - start)
        await app.purge()

        # 2. bulk: one enqueue_many call
        start = time.perf_counter()
        await app.enqueue_many(noop, [() for _ in range(args.n_bulk)])
        await app.flush_events()
        result["enqueue_bulk"] = args.n_bulk / (time.perf_counter() - start)

        # 3. drain the bulk jobs with one burst worker process
        channel = Channel()
        spawned = time.time()
        proc = spawn([*worker_cmd, "--burst"], channel.env(args.n_bulk), HERE, log)
        try:
            report = await anyio.to_thread.run_sync(channel.receive, args.timeout)
            await anyio.to_thread.run_sync(proc.wait, args.timeout)
            exited = time.time()
        finally:
            stop(proc)
        result["drain"] = drain_rate(report)
        result["drain_spawn_to_exit"] = args.n_bulk / (exited - spawned)
        result["drain_first_start_to_exit"] = args.n_bulk / (exited - report["first"])
        succeeded = await app.count_tasks(TaskStatus.SUCCEEDED)
        if succeeded != args.n_bulk:
            result["warning"] = f"{succeeded} of {args.n_bulk} tasks SUCCEEDED after the burst worker exited"
        await app.purge()

        # 4. latency with an idle worker in another process
        proc = spawn(worker_cmd, channel.env(), HERE, log)
        try:
            result.update(await measure_latency_async(channel, ping.enqueue, args.n_latency, args.timeout))
        finally:
            stop(proc)
            channel.close()
        await app.purge()
    from importlib.metadata import version

    result["version"] = version("omniq-core")
    result["notes"] = (
        f"defaults (results + events stored), async pool, --concurrency {args.concurrency}; "
        "bulk = one enqueue_many call"
    )
    return result


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-single", type=int, default=2000)
    parser.add_argument("--n-bulk", type=int, default=10000)
    parser.add_argument("--n-latency", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--workdir", required=True)
    emit(anyio.run(main, parser.parse_args()))


if __name__ == "__main__":
    cli()
