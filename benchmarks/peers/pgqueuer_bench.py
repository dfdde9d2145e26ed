"""pgqueuer's four scenarios; run with benchmarks/.venvs/pgqueuer/bin/python.

Also the worker: ``python pgqueuer_bench.py --worker --concurrency 10`` (PgQueuer.run(); ``pgq run`` crashes in 1.6.0).
Environment: BENCH_URL (a database of its own, created and dropped by run.py), BENCH_WORKDIR.
pgqueuer's defaults otherwise (batch size 10, LISTEN/NOTIFY; no result storage, a log table).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import asyncpg
from common import Channel, count_noop, drain_rate, emit, measure_latency_async, peer_args, report_ping, spawn, stop
from pgqueuer import AsyncpgDriver, Job, PgQueuer, Queries

HERE = os.path.dirname(os.path.abspath(__file__))  # peers/: the worker's cwd
BIN = os.path.dirname(os.path.abspath(sys.executable))  # this venv's scripts


async def create() -> PgQueuer:
    """The worker's factory."""
    connection = await asyncpg.connect(os.environ["BENCH_URL"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        count_noop()

    @pgq.entrypoint("ping")
    async def ping(job: Job) -> None:
        report_ping(int(job.payload or b"0"))

    return pgq


async def run_worker(concurrency: int) -> None:
    """The worker process: PgQueuer.run() with its defaults and a concurrency cap."""
    pgq = await create()
    # pgqueuer requires max_concurrent_tasks >= 2 x batch_size
    await pgq.run(max_concurrent_tasks=concurrency, batch_size=max(1, concurrency // 2))


async def main(args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {}
    log = os.path.join(os.environ["BENCH_WORKDIR"], "pgqueuer-worker.log")
    # `pgq run` crashes at start-up in pgqueuer 1.6.0 (its log-level option), so the worker process runs
    # PgQueuer.run() itself with the same defaults the CLI would pass.
    worker = [
        sys.executable,
        os.path.join(HERE, "pgqueuer_bench.py"),
        "--worker",
        "--concurrency",
        str(args.concurrency),
    ]
    connection = await asyncpg.connect(os.environ["BENCH_URL"])
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()

    # 1. one at a time (then cleared)
    start = time.perf_counter()
    for _ in range(args.n_single):
        await queries.enqueue("noop", None)
    result["enqueue_single"] = args.n_single / (time.perf_counter() - start)
    await queries.clear_queue()

    # 2. bulk: one enqueue() call with lists
    start = time.perf_counter()
    await queries.enqueue(["noop"] * args.n_bulk, [None] * args.n_bulk, [0] * args.n_bulk)
    result["enqueue_bulk"] = args.n_bulk / (time.perf_counter() - start)

    # 3. drain, 4. latency: one worker process
    channel = Channel()
    proc = spawn(worker, channel.env(args.n_bulk), HERE, log)
    loop = asyncio.get_running_loop()
    try:
        result["drain"] = drain_rate(await loop.run_in_executor(None, channel.receive, args.timeout))
        result.update(
            await measure_latency_async(
                channel, lambda seq: queries.enqueue("ping", str(seq).encode()), args.n_latency, args.timeout
            )
        )
    finally:
        stop(proc)
        channel.close()
        await connection.close()
    from importlib.metadata import version

    result["version"] = version("pgqueuer")
    result["notes"] = (
        f"PgQueuer.run(max_concurrent_tasks={args.concurrency}, batch_size={args.concurrency // 2}) in its own "
        "process (pgqueuer requires max >= 2 x batch; `pgq run` crashes in 1.6.0); "
        "bulk = one Queries.enqueue call with lists; no result storage"
    )
    return result


if __name__ == "__main__":
    parsed = peer_args(worker_flag=True)
    if parsed.worker:
        asyncio.run(run_worker(parsed.concurrency))
    else:
        emit(asyncio.run(main(parsed)))
