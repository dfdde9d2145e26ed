"""huey's four scenarios (SqliteHuey or RedisHuey); run with benchmarks/.venvs/huey/bin/python.

Also the task module of the consumer: ``huey_consumer.py huey_bench.huey -w 10 -k thread`` (cwd = peers/).
Environment: BENCH_ENGINE (sqlite|redis), BENCH_URL (redis), BENCH_WORKDIR, BENCH_NAME.
huey's defaults otherwise (results on; a None result is not stored).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import Channel, drain_rate, emit, measure_latency, peer_args, spawn, stop
from huey import RedisHuey, SqliteHuey

HERE = os.path.dirname(os.path.abspath(__file__))  # peers/: the worker's cwd
BIN = os.path.dirname(os.path.abspath(sys.executable))  # this venv's scripts


def make_huey(suffix: str = ""):
    name = os.environ.get("BENCH_NAME", "bench") + suffix
    if os.environ.get("BENCH_ENGINE", "sqlite") == "redis":
        return RedisHuey(name, url=os.environ["BENCH_URL"])
    return SqliteHuey(name, filename=os.path.join(os.environ["BENCH_WORKDIR"], f"huey{suffix}.db"))


huey = make_huey()


@huey.task(name="noop")
def noop():
    from common import count_noop

    count_noop()


@huey.task(name="ping")
def ping(seq):
    from common import report_ping

    report_ping(seq)


def main(args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {}
    log = os.path.join(os.environ["BENCH_WORKDIR"], "huey-worker.log")
    consumer = [
        os.path.join(BIN, "huey_consumer"),
        "huey_bench.huey",
        "-w",
        str(args.concurrency),
        "-k",
        "thread",
        "-q",
    ]
    huey.flush()

    # 1. one at a time, into a second huey (its own queue), flushed afterwards
    single = make_huey("_single")
    single_noop = single.task(name="noop")(lambda: None)
    start = time.perf_counter()
    for _ in range(args.n_single):
        single_noop()
    result["enqueue_single"] = args.n_single / (time.perf_counter() - start)
    single.flush()

    # 2. bulk: huey has no bulk enqueue; Task.map() is a loop of enqueues
    start = time.perf_counter()
    noop.map([() for _ in range(args.n_bulk)])
    result["enqueue_bulk"] = args.n_bulk / (time.perf_counter() - start)

    # 3. drain, 4. latency: one consumer process
    channel = Channel()
    proc = spawn(consumer, channel.env(args.n_bulk), HERE, log)
    try:
        result["drain"] = drain_rate(channel.receive(args.timeout))
        result.update(measure_latency(channel, ping, args.n_latency, args.timeout))
    finally:
        stop(proc)
        channel.close()
        huey.flush()
    from importlib.metadata import version

    result["version"] = version("huey")
    waiting = (
        "blocking pop (RedisHuey default)"
        if isinstance(huey, RedisHuey)
        else "default polling (-d 0.1, backoff 1.15, max 10 s)"
    )
    result["notes"] = (
        f"{type(huey).__name__}, consumer -w {args.concurrency} -k thread, {waiting}; "
        "bulk = Task.map (a loop); sync def no-op"
    )
    return result


if __name__ == "__main__":
    import huey_bench  # the consumer knows the tasks by this module's name, not __main__

    emit(huey_bench.main(peer_args()))
