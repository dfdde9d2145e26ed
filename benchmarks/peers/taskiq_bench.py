"""taskiq's four scenarios on Redis (taskiq-redis) or NATS JetStream (taskiq-nats).

Run with benchmarks/.venvs/taskiq/bin/python (redis) or .venvs/taskiq_nats/bin/python (nats).
Also the worker's module: ``taskiq worker taskiq_bench:broker -w 1 --max-async-tasks 10`` (cwd = peers/).
Environment: BENCH_ENGINE (redis|nats), BENCH_URL, BENCH_WORKDIR, BENCH_NAME.

Redis: RedisStreamBroker (consumer group, acked after execution) + RedisAsyncResultBackend (results on).
NATS: PullBasedJetStreamBroker (its default fetch batch of 1) + NATSObjectStoreResultBackend (results on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import Channel, count_noop, drain_rate, emit, measure_latency_async, peer_args, report_ping, spawn, stop

HERE = os.path.dirname(os.path.abspath(__file__))  # peers/: the worker's cwd
BIN = os.path.dirname(os.path.abspath(sys.executable))  # this venv's scripts

NAME = os.environ.get("BENCH_NAME", "bench")
ENGINE = os.environ.get("BENCH_ENGINE", "redis")


def make_broker(suffix: str = ""):
    url = os.environ.get("BENCH_URL", "")
    if ENGINE == "nats":
        from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

        return PullBasedJetStreamBroker(
            url, subject=f"{NAME}{suffix}.tasks", stream_name=f"{NAME}{suffix}", durable=f"{NAME}{suffix}"
        ).with_result_backend(NATSObjectStoreResultBackend(url, bucket_name=f"{NAME}{suffix}_results"))
    from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

    return RedisStreamBroker(
        url, queue_name=f"{NAME}{suffix}", consumer_group_name=f"{NAME}{suffix}"
    ).with_result_backend(RedisAsyncResultBackend(url, prefix_str=f"{NAME}{suffix}", result_ex_time=3600))


broker = make_broker()


@broker.task(task_name="noop")
async def noop() -> None:
    count_noop()


@broker.task(task_name="ping")
async def ping(seq: int) -> None:
    report_ping(seq)


async def main(args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {}
    log = os.path.join(os.environ["BENCH_WORKDIR"], f"taskiq-{ENGINE}-worker.log")
    worker = [
        os.path.join(BIN, "taskiq"),
        "worker",
        "taskiq_bench:broker",
        "-w",
        "1",
        "--max-async-tasks",
        str(args.concurrency),
        "--log-level",
        "WARNING",
    ]

    # 1. one at a time, into a second broker (its own stream), never consumed, removed by the runner
    single = make_broker("_single")
    single_noop = single.task(task_name="noop")(noop.original_func)
    await single.startup()
    start = time.perf_counter()
    for _ in range(args.n_single):
        await single_noop.kiq()
    result["enqueue_single"] = args.n_single / (time.perf_counter() - start)
    await single.shutdown()

    await broker.startup()  # creates the consumer group / durable consumer before anything is sent
    # 2. bulk: taskiq has no bulk enqueue; a loop of kiq()
    start = time.perf_counter()
    for _ in range(args.n_bulk):
        await noop.kiq()
    result["enqueue_bulk"] = args.n_bulk / (time.perf_counter() - start)

    # 3. drain, 4. latency: one worker process
    channel = Channel()
    proc = spawn(worker, channel.env(args.n_bulk), HERE, log)
    loop = asyncio.get_running_loop()
    try:
        result["drain"] = drain_rate(await loop.run_in_executor(None, channel.receive, args.timeout))
        result.update(await measure_latency_async(channel, ping.kiq, args.n_latency, args.timeout))
    finally:
        stop(proc)
        channel.close()
        await broker.shutdown()
    from importlib.metadata import version

    result["version"] = version("taskiq")
    backend = (
        "RedisStreamBroker + RedisAsyncResultBackend (results on)"
        if ENGINE == "redis"
        else f"PullBasedJetStreamBroker (fetch batch 1) + NATSObjectStoreResultBackend (results on), "
        f"taskiq-nats {version('taskiq-nats')}"
    )
    result["notes"] = (
        f"{backend}; taskiq worker -w 1 --max-async-tasks {args.concurrency}; bulk = a loop of kiq() (no bulk API)"
    )
    return result


if __name__ == "__main__":
    import taskiq_bench  # the worker knows the tasks by this module's name, not __main__

    emit(asyncio.run(taskiq_bench.main(peer_args())))
