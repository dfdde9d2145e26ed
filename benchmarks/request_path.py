"""The web-request path: one enqueue per call, from sync and from async code, against huey's sync client.

    python benchmarks/request_path.py                                   # sqlite,redis,postgres,nats; 3 rounds
    python benchmarks/request_path.py --engines sqlite,redis -n 5000 --rounds 5

Each figure is one process making N sequential enqueue calls of a no-argument
task into a queue no worker consumes (after 200 warm-up calls): calls per
second (OmniQ's buffered events flushed inside the timing), and the p50 / p99
of one call in µs. Libraries run one after the other in each round, on a fresh
namespace each (run.py's ``Engine``), so a round's figures share the
machine's load; the table gives medians over the rounds and [min–max].

- ``OmniQ`` (sync): ``handle.enqueue()``; on SQLite and Redis it runs in the
  caller's thread (``Capability.BLOCKING_ENQUEUE``), elsewhere through the
  app's loop thread.
- ``AsyncOmniQ``: ``await handle.enqueue()``.
- huey (SQLite and Redis): calling the task (``SqliteHuey`` / ``RedisHuey``, its
  defaults), in its own venv (``benchmarks/.venvs/huey``, made by run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
WARM_UP = 200


def _figures(times: list[float]) -> dict[str, float]:
    times.sort()
    return {
        "p50_us": times[len(times) // 2] * 1e6,
        "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6,
    }


def _child_omniq_sync(n: int) -> dict[str, float]:
    from omniq import OmniQ

    with OmniQ.from_env() as app:
        handle = app.task(name="noop", queue="request-path")(lambda: None)
        for _ in range(WARM_UP):
            handle.enqueue()
        times = []
        clock = time.perf_counter
        start = clock()
        for _ in range(n):
            t0 = clock()
            handle.enqueue()
            times.append(clock() - t0)
        app.flush_events()
        rate = n / (clock() - start)
    return {"rate": rate, **_figures(times)}


def _child_omniq_async(n: int) -> dict[str, float]:
    from omniq import AsyncOmniQ

    async def main() -> dict[str, float]:
        async with AsyncOmniQ.from_env() as app:
            handle = app.task(name="noop", queue="request-path")(lambda: None)
            for _ in range(WARM_UP):
                await handle.enqueue()
            times = []
            clock = time.perf_counter
            start = clock()
            for _ in range(n):
                t0 = clock()
                await handle.enqueue()
                times.append(clock() - t0)
            await app.flush_events()
            rate = n / (clock() - start)
        return {"rate": rate, **_figures(times)}

    return asyncio.run(main())


def _child_huey(n: int) -> dict[str, float]:
    from huey import RedisHuey, SqliteHuey

    name = os.environ["BENCH_NAME"] + "_request"
    if os.environ["BENCH_ENGINE"] == "redis":
        huey = RedisHuey(name, url=os.environ["BENCH_URL"])
    else:
        huey = SqliteHuey(name, filename=os.path.join(os.environ["BENCH_WORKDIR"], "huey-request.db"))
    noop = huey.task(name="noop")(lambda: None)
    for _ in range(WARM_UP):
        noop()
    times = []
    clock = time.perf_counter
    start = clock()
    for _ in range(n):
        t0 = clock()
        noop()
        times.append(clock() - t0)
    rate = n / (clock() - start)
    huey.flush()
    return {"rate": rate, **_figures(times)}


CHILDREN = {"omniq-sync": _child_omniq_sync, "omniq-async": _child_omniq_async, "huey": _child_huey}
LIBRARIES = {
    "sqlite": ["omniq-sync", "omniq-async", "huey"],
    "redis": ["omniq-sync", "omniq-async", "huey"],
    "postgres": ["omniq-sync", "omniq-async"],
    "nats": ["omniq-sync", "omniq-async"],
}


def _run_child(library: str, engine: Any, n: int) -> dict[str, float]:
    from run import HUEY, ensure_venv

    if library == "huey":
        python, env = ensure_venv(HUEY), engine.peer_env()
    else:
        python, env = sys.executable, engine.omniq_env()
    out = subprocess.run(
        [python, os.path.abspath(__file__), "--child", library, "-n", str(n)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{library} on {engine.name} failed:\n{out.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def _cell(values: list[float], digits: int = 0) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:,.{digits}f}"
    return f"{median:,.{digits}f} [{min(values):,.{digits}f}–{max(values):,.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="sqlite,redis,postgres,nats")
    parser.add_argument("-n", type=int, default=3000, help="timed calls per library and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.n)))
        return
    sys.path.insert(0, HERE)
    from run import Engine

    command = "python benchmarks/request_path.py " + " ".join(sys.argv[1:])
    print(f"# {command}\n# nproc {os.cpu_count()}, Python {sys.version.split()[0]}, {args.rounds} rounds, n={args.n}\n")
    for name in args.engines.split(","):
        rounds: dict[str, list[dict[str, float]]] = {lib: [] for lib in LIBRARIES[name]}
        for _ in range(args.rounds):
            engine = Engine(name)
            asyncio.run(engine.setup())
            try:
                for library in LIBRARIES[name]:
                    rounds[library].append(_run_child(library, engine, args.n))
            finally:
                asyncio.run(engine.cleanup())
        print(f"## {name}\n")
        print("| library | enqueue calls/s | call p50 µs | call p99 µs |")
        print("| --- | --- | --- | --- |")
        for library, figures in rounds.items():
            cells = [_cell([f[key] for f in figures]) for key in ("rate", "p50_us", "p99_us")]
            print(f"| {library} | {' | '.join(cells)} |")
        sync, asynchronous = rounds["omniq-sync"], rounds["omniq-async"]
        ratios = [s["rate"] / a["rate"] for s, a in zip(sync, asynchronous, strict=True)]
        print(f"\nsync / async (per round): {_cell(ratios, 2)}")
        if "huey" in rounds:
            ratios = [s["rate"] / h["rate"] for s, h in zip(sync, rounds["huey"], strict=True)]
            print(f"sync OmniQ / huey (per round): {_cell(ratios, 2)}")
        print()


if __name__ == "__main__":
    main()
