"""What typed arguments cost: untyped vs annotated task functions, on one engine (not part of run.py).

    OMNIQ_BACKEND=sqlite OMNIQ_BASE_DIR=/tmp/x python benchmarks/typed_args_cost.py [--n 2000] [--repeat 3]

Three functions of the same arguments: ``untyped(a, b, c, d)``, ``scalars(a: int, b: str, c: float,
d: bool)`` and ``rich(point: Point, ids: list[UUID], when: datetime, amount: Decimal)`` (with
rich values for ``rich``). For each, in this process: (1) jobs/s of N sequential ``enqueue`` calls,
(2) jobs/s of an in-process burst worker (async pool, concurrency 10) draining N jobs enqueued with
``enqueue_many``, and (3) the per-call CPU time of the steps typing adds to both paths:
``decode_args`` (the worker's decode) and ``check_arguments`` with the encoded payload (enqueue's check).
Prints one line per function and figure; medians over ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import timeit
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import anyio

from omniq import AsyncOmniQ


@dataclasses.dataclass
class Point:
    x: int
    y: int


def untyped(a, b, c, d):  # type: ignore[no-untyped-def]
    return None


def scalars(a: int, b: str, c: float, d: bool) -> None:
    return None


def rich(point: Point, ids: list[uuid.UUID], when: datetime, amount: Decimal) -> None:
    return None


PLAIN = (1, "two", 3.0, True)
RICH = (Point(1, 2), [uuid.UUID(int=1), uuid.UUID(int=2)], datetime(2024, 1, 2, 3, 4, 5), Decimal("12.34"))
CASES: dict[str, tuple[Any, tuple[Any, ...]]] = {"untyped": (untyped, PLAIN), "scalars": (scalars, PLAIN)}
CASES["rich"] = (rich, RICH)


def cpu_time(step: Any, loops: int) -> float:
    """µs of this process's CPU per call (process time: steadier than wall time on a busy machine)."""
    return timeit.Timer(step, timer=time.process_time).timeit(loops) / loops * 1e6


async def round_(app: AsyncOmniQ, name: str, n: int) -> dict[str, float]:
    _, args = CASES[name]
    figures: dict[str, float] = {}
    await app.purge()
    start = time.perf_counter()
    for _ in range(n):
        await app.enqueue(name, *args)
    await app.flush_events()
    figures["enqueue jobs/s"] = n / (time.perf_counter() - start)
    await app.purge()
    await app.enqueue_many(name, [args] * n)
    start = time.perf_counter()
    await app.worker(concurrency=10, burst=True).start()
    figures["drain jobs/s"] = n / (time.perf_counter() - start)
    await app.purge()
    # the steps typing adds, alone (per call, µs)
    handle = app.functions[name]
    task = app._build_task(name, args, {}, handle.default_options)
    loops = 20000
    figures["decode_args µs"] = cpu_time(lambda: app.decode_args(task), loops)
    payload = task.payload
    try:
        handle.check_arguments(args, {}, payload)
        check = lambda: handle.check_arguments(args, {}, payload)  # noqa: E731
    except TypeError:  # a version without typed arguments: check_arguments(args, kwargs)
        check = lambda: handle.check_arguments(args, {})  # noqa: E731
    figures["check_arguments µs"] = cpu_time(check, loops)
    return figures


async def main(args: argparse.Namespace) -> None:
    app = AsyncOmniQ()
    for name, (func, _) in CASES.items():
        app.register(func, name=name)
    async with app:
        results: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
        for _ in range(args.repeat):
            for name in CASES:
                results[name].append(await round_(app, name, args.n))
        for name, rounds in results.items():
            for key in rounds[0]:
                print(f"{name:8} {key:20} {statistics.median(r[key] for r in rounds):10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    anyio.run(main, parser.parse_args())
