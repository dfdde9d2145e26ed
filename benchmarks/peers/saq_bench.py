"""SAQ's four scenarios on Redis or PostgreSQL; run with benchmarks/.venvs/saq/bin/python.

Also the worker's settings module: ``saq saq_bench.settings --workers 1`` (cwd = peers/).
Environment: BENCH_ENGINE (redis|postgres), BENCH_URL, BENCH_WORKDIR, BENCH_NAME.
SAQ's defaults otherwise (job status and result kept for the job's ttl).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import Channel, count_noop, drain_rate, emit, measure_latency_async, peer_args, report_ping, spawn, stop
from saq import Queue

HERE = os.path.dirname(os.path.abspath(__file__))  # peers/: the worker's cwd
BIN = os.path.dirname(os.path.abspath(sys.executable))  # this venv's scripts

NAME = os.environ.get("BENCH_NAME", "bench")
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))


def make_queue(suffix: str = "") -> Queue:
    return Queue.from_url(os.environ["BENCH_URL"], name=f"{NAME}{suffix}")


async def noop(ctx) -> None:
    count_noop()


async def ping(ctx, *, seq: int) -> None:
    report_ping(seq)


queue = make_queue()
settings = {"queue": queue, "functions": [noop, ping], "concurrency": CONCURRENCY}


async def main(args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {}
    log = os.path.join(os.environ["BENCH_WORKDIR"], "saq-worker.log")
    worker = [os.path.join(BIN, "saq"), "saq_bench.settings", "--workers", "1", "--quiet"]
    os.environ["BENCH_CONCURRENCY"] = str(args.concurrency)

    # 1. one at a time, into a second queue (never consumed; removed by the runner)
    single = make_queue("_single")
    await single.connect()
    start = time.perf_counter()
    for _ in range(args.n_single):
        await single.enqueue("noop")
    result["enqueue_single"] = args.n_single / (time.perf_counter() - start)
    await single.disconnect()

    await queue.connect()
    # 2. bulk: SAQ has no bulk enqueue (map() waits for results); a loop of enqueue()
    start = time.perf_counter()
    for _ in range(args.n_bulk):
        await queue.enqueue("noop")
    result["enqueue_bulk"] = args.n_bulk / (time.perf_counter() - start)

    # 3. drain, 4. latency: one worker process
    channel = Channel()
    proc = spawn(worker, channel.env(args.n_bulk), HERE, log)
    loop = asyncio.get_running_loop()
    try:
        result["drain"] = drain_rate(await loop.run_in_executor(None, channel.receive, args.timeout))
        result.update(
            await measure_latency_async(
                channel, lambda seq: queue.enqueue("ping", seq=seq), args.n_latency, args.timeout
            )
        )
    finally:
        stop(proc)
        channel.close()
        await queue.disconnect()
    from importlib.metadata import version

    result["version"] = version("saq")
    result["notes"] = (
        f"{type(queue).__name__}, saq worker --workers 1, concurrency {args.concurrency}; "
        "bulk = a loop of enqueue() (no bulk API)"
    )
    return result


if __name__ == "__main__":
    parsed = peer_args()
    os.environ["BENCH_CONCURRENCY"] = str(parsed.concurrency)  # the worker reads it from the environment
    import saq_bench  # the worker knows the functions by this module, not __main__

    emit(asyncio.run(saq_bench.main(parsed)))
