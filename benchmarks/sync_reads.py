"""The sync API's reads: ``OmniQ.get_result`` / ``get_task`` in the caller's thread against through the loop thread.

    python benchmarks/sync_reads.py                          # every engine, 3 rounds of 2,000 calls
    python benchmarks/sync_reads.py --engines sqlite,redis -n 5000 --rounds 5

On engines whose task queue and result storage have ``Capability.BLOCKING_READS``
the sync ``OmniQ`` reads a task or a result in the calling thread
(:mod:`omniq._reads`); before, every read went to the app's loop thread and
back (``OmniQ._call``, which is still the path for ``wait=True`` and for
engines without the capability). Both paths run here in one process, on one
finished task, default settings, alternating per round (the order turns each
round), each figure ``N`` sequential calls after request_path.py's warm-up: calls per second and the p50 of one call in µs, medians and [min-max]
over the rounds, and the ratio in-thread / through-the-loop per round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from request_path import _timed  # noqa: E402
from run import Engine  # noqa: E402

from omniq import OmniQ, Settings  # noqa: E402

CALLS = ("get_result", "get_task")


def measure(engine: str, n: int, rounds: int) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Per (call, path): one (rate, p50) per round."""
    bench = Engine(engine)
    asyncio.run(bench.setup())
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        env = bench.omniq_env()
        settings = Settings.load(env=env)
        with OmniQ(settings) as app:
            app.task(name="noop")(lambda: 42)
            task_id = app.enqueue("noop")
            app.worker(burst=True).run()
            async_app = app.async_app
            paths: dict[str, dict[str, Callable[[], object]]] = {
                "in-thread": {"get_result": lambda: app.get_result(task_id), "get_task": lambda: app.get_task(task_id)},
                "loop-thread": {
                    "get_result": lambda: app._call(async_app.get_result, task_id),
                    "get_task": lambda: app._call(async_app.get_task, task_id),
                },
            }
            assert app.get_result(task_id).result == 42  # type: ignore[union-attr]
            for round_ in range(rounds):
                order = list(paths) if round_ % 2 == 0 else list(reversed(paths))
                for call in CALLS:
                    for path in order:
                        timed = _timed(paths[path][call], n)
                        figures.setdefault((call, path), []).append((timed["rate"], timed["p50_us"]))
    finally:
        asyncio.run(bench.cleanup())
    return figures


def _cell(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):,.{digits}f} [{min(values):,.{digits}f}-{max(values):,.{digits}f}]"


def main() -> None:
    """Measure each engine and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="sqlite,file,redis,postgres,nats")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for engine in args.engines.split(","):
        figures = measure(engine, args.n, args.rounds)
        print(f"\n## {engine}\n")
        print("| call | path | calls/s | call p50 µs |")
        print("| --- | --- | --- | --- |")
        for (call, path), values in figures.items():
            print(f"| {call} | {path} | {_cell([v[0] for v in values])} | {_cell([v[1] for v in values])} |")
        for call in CALLS:
            ratios = [
                a[0] / b[0] for a, b in zip(figures[(call, "in-thread")], figures[(call, "loop-thread")], strict=True)
            ]
            print(f"\n{call} in-thread / loop-thread (per round): {_cell(ratios, 2)}")


if __name__ == "__main__":
    main()
