"""Fan-in: a chord of N no-op members against a drain of N independent no-op tasks, same engine, same run.

    python benchmarks/workflows.py --engines sqlite,redis -n 10000 --rounds 3

Each round, per engine: (a) N no-op tasks queued with one ``enqueue_many``; (b) ``chord(group(noop.s()
x N), count_values.s())`` queued with one ``.enqueue()`` (N + 1 tasks, the callback waiting on all N).
Each is run by one worker process, ``omniq worker omniq_app:app`` at its defaults (as ``run.py``'s
drain), stopped once everything succeeded. The time is the engine's own: from the first task's
``started_at`` to the last finish (for the chord: the callback's, so it includes the callback being
made ready, claimed, reading N results and running). The order of (a) and (b) alternates between
rounds. Prints each case's median and range and the chord/drain time ratio (issue 18's target:
at most 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
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

from processes_scaling import _drop, _env, _settings  # noqa: E402

from omniq import AsyncOmniQ, TaskStatus, chord, group  # noqa: E402


async def _queue(env: dict[str, str], n: int, fan_in: bool) -> None:
    async with AsyncOmniQ(_settings(env)) as app:
        if fan_in:
            await chord(group(app.signature("noop") for _ in range(n)), app.signature("count_values")).enqueue()
        else:
            await app.enqueue_many("noop", [() for _ in range(n)])


async def _wait_done(env: dict[str, str], total: int, timeout: float) -> None:
    async with AsyncOmniQ(_settings(env)) as app:
        deadline = time.monotonic() + timeout
        while await app.count_tasks(TaskStatus.SUCCEEDED) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not done within {timeout} s")
            await asyncio.sleep(0.2)


async def _span(env: dict[str, str], total: int) -> float:
    async with AsyncOmniQ(_settings(env)) as app:
        tasks = await app.list_tasks(TaskStatus.SUCCEEDED, limit=total)
        assert len(tasks) == total, "not every task succeeded"
        first = min(t.started_at for t in tasks if t.started_at is not None)
        last = max(t.finished_at for t in tasks if t.finished_at is not None)
        for task in tasks:
            if task.func == "count_values" and task.started_at and task.finished_at:
                members_done = max(t.finished_at for t in tasks if t.func == "noop" and t.finished_at)
                print(
                    f"  callback: ready after the last member {(task.started_at - members_done).total_seconds():.3f} s,"
                    f" ran {(task.finished_at - task.started_at).total_seconds():.3f} s",
                    file=sys.stderr,
                )
        await app.purge()
        return (last - first).total_seconds()


def run_once(engine: str, n: int, fan_in: bool) -> float:
    """Seconds from the first start to the last finish of N tasks (``fan_in``: and the chord's callback)."""
    total = n + 1 if fan_in else n
    with tempfile.TemporaryDirectory() as workdir:
        env = _env(engine, workdir, f"bench_{uuid.uuid4().hex[:10]}")
        try:
            asyncio.run(_queue(env, n, fan_in))
            command = [sys.executable, "-m", "omniq", "--log-level", "WARNING", "worker", "omniq_app:app"]
            worker = subprocess.Popen(command, env=env, cwd=HERE, stdout=subprocess.DEVNULL)
            try:
                asyncio.run(_wait_done(env, total, 900))
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=60)
            return asyncio.run(_span(env, total))
        finally:
            _drop(engine, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="sqlite,redis")
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"command: python benchmarks/workflows.py --engines {args.engines} -n {args.n} --rounds {args.rounds}")
    print("| engine | drain of N (s) | chord of N (s) | chord / drain |")
    print("| --- | --- | --- | --- |")
    for engine in args.engines.split(","):
        times: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(args.rounds):
            for fan_in in (False, True) if round_ % 2 == 0 else (True, False):
                times[fan_in].append(run_once(engine, args.n, fan_in))
        drain, fan = (statistics.median(times[k]) for k in (False, True))
        ratios = sorted(c / d for c, d in zip(times[True], times[False], strict=True))
        print(
            f"| {engine} | {drain:.2f} ({min(times[False]):.2f}–{max(times[False]):.2f}) "
            f"| {fan:.2f} ({min(times[True]):.2f}–{max(times[True]):.2f}) "
            f"| {fan / drain:.2f} (rounds {ratios[0]:.2f}–{ratios[-1]:.2f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
