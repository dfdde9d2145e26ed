"""Flow control under load: a concurrency limit across two worker processes, and a rate limit held.

    python benchmarks/flow_control.py concurrency --engines redis,postgres,sqlite --rounds 3 -n 20000
    python benchmarks/flow_control.py rate --engines redis,postgres,sqlite --rate 500 --seconds 20

``concurrency``: each round queues N no-op tasks with one ``enqueue_many``, once without limits and
once with ``concurrency_limit=50`` (one key: the task name), and drains each with ``omniq worker
omniq_app:app --processes 2 --concurrency 100`` (order alternating between rounds), stopped once all succeeded.
``--capped`` adds a third case, unlimited tasks drained with ``--concurrency 25`` (as many in flight
as the limit lets run, with no limit to hold): what the engine does with 50 tasks in flight, the
bound of the limited drain short of a cheaper finish-and-claim cycle. ``--limit 50,200`` drains
the limited tasks once per limit; 200 lets as many run as the unlimited drain has in flight (two
workers of 100), so its ratio is what the limit itself costs, apart from the slots it withholds
(a slot comes back only once its holder's finish is recorded: at most ``limit`` tasks per finish
round trip). ``--capped`` uses the first limit. The rate is N over the span
from the first task's start to the last task's finish, read back from the queue (as
``processes_scaling.py`` does). Prints each case's median and range and the limited/unlimited ratio.

``--task-ms 20`` drains tasks that wait 20 ms (``asyncio.sleep``) instead of no-ops, and prints
how busy the slots were (tasks/s x 20 ms / slots): a slot is held from its task's start until its
finish is recorded, so with tasks that last, the limited drain comes close to ``limit / duration``.

``rate``: queues ``rate * (seconds + 2)`` no-op tasks with ``rate_limit="<rate>/s"`` (the default
burst: one second's worth) and drains them with two worker processes for ``seconds + 2`` seconds.
The starts (``started_at``, the engine's clock) are counted per second; the steady rate is the
number of starts from one second after the first start, over ``seconds`` seconds, divided by
``seconds`` (the first second holds the burst). Prints the steady rate, its ratio to the limit and the
fewest and most starts in any one-second window of the steady part.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from processes_scaling import _drop, _env, _settings, _span_rate  # noqa: E402

from omniq import AsyncOmniQ, TaskStatus  # noqa: E402
from omniq.errors import BackendUnavailableError  # noqa: E402


async def _enqueue(env: dict[str, str], n: int, task_ms: float = 0.0, **options: object) -> None:
    name, args = ("nap", (task_ms,)) if task_ms else ("noop", ())
    async with AsyncOmniQ(_settings(env)) as app:
        for start in range(0, n, 5000):
            await app.enqueue_many(name, [args for _ in range(min(5000, n - start))], **options)  # type: ignore[arg-type]


def _worker(env: dict[str, str], processes: int, burst: bool, concurrency: int = 100) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "omniq", "--log-level", "WARNING", "worker", "omniq_app:app"]
    command += ["--processes", str(processes), "--concurrency", str(concurrency), *(["--burst"] if burst else [])]
    return subprocess.Popen(command, env=env, cwd=HERE, stdout=subprocess.DEVNULL)


async def _wait_done(env: dict[str, str], n: int, timeout: float) -> None:
    async with AsyncOmniQ(_settings(env)) as app:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await app.count_tasks(TaskStatus.SUCCEEDED) >= n:
                    return
            except BackendUnavailableError:  # a count that scans (NATS's) may time out under the drain's load
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not drained within {timeout} s")
            await asyncio.sleep(0.2)


def drain(engine: str, n: int, limit: int | None, concurrency: int = 100, task_ms: float = 0.0) -> float:
    """Tasks per second draining ``n`` no-op tasks (``task_ms``: naps) under ``concurrency_limit=limit``, 2 processes.

    The workers run as in production (not ``--burst``, whose idle checks would time the end of the
    run, not the drain) and are stopped once every task succeeded.
    """
    with tempfile.TemporaryDirectory() as workdir:
        env = _env(engine, workdir, f"bench_{uuid.uuid4().hex[:10]}")
        try:
            asyncio.run(_enqueue(env, n, task_ms, **({"concurrency_limit": limit} if limit else {})))
            worker = _worker(env, 2, burst=False, concurrency=concurrency)
            try:
                asyncio.run(_wait_done(env, n, 900))
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=60)
            return asyncio.run(_span_rate(env, n))
        finally:
            _drop(engine, env)


async def _starts(env: dict[str, str]) -> list[float]:
    async with AsyncOmniQ(_settings(env)) as app:
        tasks = await app.list_tasks(TaskStatus.SUCCEEDED, limit=10**7)
        return sorted(t.started_at.timestamp() for t in tasks if t.started_at is not None)


def rate_run(engine: str, rate: int, seconds: int) -> tuple[float, int, int]:
    """(steady starts per second, fewest and most starts in a one-second window) under ``rate_limit``."""
    with tempfile.TemporaryDirectory() as workdir:
        env = _env(engine, workdir, f"bench_{uuid.uuid4().hex[:10]}")
        try:
            asyncio.run(_enqueue(env, rate * (seconds + 2), rate_limit=f"{rate}/s"))
            worker = _worker(env, 2, burst=False)
            time.sleep(seconds + 3)
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
            starts = asyncio.run(_starts(env))
        finally:
            _drop(engine, env)
    begin = starts[0] + 1.0
    end = begin + seconds
    steady = starts[bisect.bisect_left(starts, begin) : bisect.bisect_left(starts, end)]
    windows = [
        bisect.bisect_left(starts, t + 1.0) - bisect.bisect_left(starts, t)
        for t in (begin + i * 0.1 for i in range(int((seconds - 1) * 10)))
    ]
    return len(steady) / seconds, min(windows), max(windows)


def _limits(text: str) -> list[int]:
    """``--limit``: one concurrency limit or several, comma-separated, each a positive integer."""
    try:
        limits = [int(value) for value in text.split(",")]
    except ValueError:
        limits = []
    if not limits or min(limits) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 50 or 50,200, not {text!r}")
    return limits


def main() -> None:
    """Run the chosen workload and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=("concurrency", "rate"))
    parser.add_argument("--engines", default="redis,postgres,sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--limit", type=_limits, default=[50], help="the concurrency limit, or several: 50,200")
    parser.add_argument(
        "--capped",
        action="store_true",
        help="also drain unlimited tasks with --concurrency limit/2 per worker: as many in flight as the limit allows",
    )
    parser.add_argument(
        "--task-ms", type=float, default=0.0, help="concurrency: tasks that wait this long (asyncio.sleep), not no-ops"
    )
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    limits: list[int] = args.limit
    for engine in args.engines.split(","):
        if args.workload == "rate":
            steady, fewest, most = rate_run(engine, args.rate, args.seconds)
            print(
                f"{engine}: rate_limit={args.rate}/s over {args.seconds} s: {steady:,.1f} starts/s "
                f"({steady / args.rate:.3f}x the limit); one-second windows {fewest}-{most}"
            )
            continue
        cases: dict[str, tuple[int | None, int]] = {"unlimited": (None, 100)}
        cases.update({f"limit {limit}": (limit, 100) for limit in limits})
        if args.capped:
            cases["capped"] = (None, -(-limits[0] // 2))  # as many in flight as the first limit lets run
        rates: dict[str, list[float]] = {case: [] for case in cases}
        for round_ in range(args.rounds):
            order = list(cases) if round_ % 2 == 0 else list(reversed(cases))
            for case in order:
                limit, slots = cases[case]
                rates[case].append(drain(engine, args.n, limit, slots, args.task_ms))
                print(f"{engine} round {round_ + 1} {case}: {rates[case][-1]:,.0f} tasks/s", file=sys.stderr)
        medians = {case: statistics.median(values) for case, values in rates.items()}
        free = medians["unlimited"]
        kind = f"{args.task_ms:g} ms" if args.task_ms else "no-op"
        print(f"\n{engine}: {args.n:,} {kind} tasks, 2 worker processes, {args.rounds} rounds")
        for case, values in rates.items():
            limit, slots = cases[case]
            # with tasks that last: the share of the time the slots (the limit, else the workers') run one
            busy = (
                f"; slots busy {medians[case] * args.task_ms / 1000 / (limit or 2 * slots):.2f}" if args.task_ms else ""
            )
            print(f"  {case:>9}: {medians[case]:>10,.0f}/s ({min(values):,.0f}-{max(values):,.0f}){busy}")
        for limit in limits:
            print(f"  concurrency_limit={limit} / unlimited: {medians[f'limit {limit}'] / free:.2f}")
        if args.capped:
            capped, held = medians["capped"], medians[f"limit {limits[0]}"]
            print(
                f"  capped / unlimited: {capped / free:.2f}; concurrency_limit={limits[0]} / capped: {held / capped:.2f}"
            )


if __name__ == "__main__":
    main()
