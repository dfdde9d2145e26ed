"""The web-request path: one enqueue per call, from sync and from async code, against the peers' own calls.

    python benchmarks/request_path.py                                   # every engine; 3 rounds
    python benchmarks/request_path.py --engines sqlite,redis -n 5000 --rounds 5

Each figure is one process making N sequential enqueue calls of a no-argument
task into a queue no worker consumes (after 200 warm-up calls): calls per
second (OmniQ's buffered events flushed inside the timing), and the p50 / p99
of one call in µs. Libraries run one after the other in each round, on a fresh
namespace each (run.py's ``Engine``), so a round's figures share the
machine's load; the table gives medians over the rounds and [min–max], and
each ratio is taken per round.

- OmniQ: ``handle.enqueue()`` on ``OmniQ`` (sync: in the caller's thread on
  engines with ``Capability.BLOCKING_ENQUEUE``) and ``await handle.enqueue()``
  on ``AsyncOmniQ``, default settings (results and events stored).
- Sync peers: huey (calling the task; ``SqliteHuey`` / ``RedisHuey``), RQ
  (``Queue.enqueue``), Celery (``delay``, Redis broker).
- Async peers: arq (``enqueue_job``), taskiq (``kiq``; Redis streams, or
  NATS JetStream ``PullBasedJetStreamBroker``, as run.py sets them up), SAQ
  (``Queue.enqueue``), pgqueuer (``Queries.enqueue``), procrastinate
  (``defer_async``).

Every peer runs with its defaults, in its own venv under ``benchmarks/.venvs``
(made on first use, as run.py does).
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
from collections.abc import Awaitable, Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "peers")
WARM_UP = 200
#: a peer child's namespace and server (run.py's Engine.peer_env)
NAME = os.environ.get("BENCH_NAME", "bench")
ENGINE = os.environ.get("BENCH_ENGINE", "")
URL = os.environ.get("BENCH_URL", "")


def _noop() -> None:
    pass


def _timed(call: Callable[[], object], n: int, then: Callable[[], object] = _noop) -> dict[str, float]:
    """N sequential calls after the warm-up, and ``then()``: calls per second, one call's p50 / p99 in µs."""
    for _ in range(WARM_UP):
        call()
    times = []
    clock = time.perf_counter
    start = clock()
    for _ in range(n):
        t0 = clock()
        call()
        times.append(clock() - t0)
    then()
    return _figures(n / (clock() - start), times)


async def _timed_async(
    call: Callable[[], Awaitable[object]], n: int, then: Callable[[], Awaitable[object]] | None = None
) -> dict[str, float]:
    """:func:`_timed` for coroutine functions."""
    for _ in range(WARM_UP):
        await call()
    times = []
    clock = time.perf_counter
    start = clock()
    for _ in range(n):
        t0 = clock()
        await call()
        times.append(clock() - t0)
    if then is not None:
        await then()
    return _figures(n / (clock() - start), times)


def _figures(rate: float, times: list[float]) -> dict[str, float]:
    times.sort()
    return {
        "rate": rate,
        "p50_us": times[len(times) // 2] * 1e6,
        "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6,
    }


# -- one library per child process (the peers' in their own venvs: no omniq import there) ----------


def _child_omniq_sync(n: int) -> dict[str, float]:
    from omniq import OmniQ

    with OmniQ.from_env() as app:
        handle = app.task(name="noop", queue="request-path")(_noop)
        return _timed(handle.enqueue, n, app.flush_events)


def _child_omniq_async(n: int) -> dict[str, float]:
    from omniq import AsyncOmniQ

    async def main() -> dict[str, float]:
        async with AsyncOmniQ.from_env() as app:
            handle = app.task(name="noop", queue="request-path")(_noop)
            return await _timed_async(handle.enqueue, n, app.flush_events)

    return asyncio.run(main())


def _child_huey(n: int) -> dict[str, float]:
    from huey import RedisHuey, SqliteHuey

    name = NAME + "_request"
    if ENGINE == "redis":
        huey = RedisHuey(name, url=URL)
    else:
        huey = SqliteHuey(name, filename=os.path.join(os.environ["BENCH_WORKDIR"], "huey-request.db"))
    figures = _timed(huey.task(name="noop")(_noop), n)
    huey.flush()
    return figures


def _child_rq(n: int) -> dict[str, float]:
    from redis import Redis
    from rq import Queue

    queue = Queue(NAME + "_rq", connection=Redis.from_url(URL))
    figures = _timed(lambda: queue.enqueue("request_path._noop"), n)
    queue.empty()
    return figures


def _child_celery(n: int) -> dict[str, float]:
    from celery import Celery

    app = Celery(NAME, broker=URL)
    app.conf.task_default_queue = NAME + "_celery"
    noop = app.task(name="noop")(_noop)
    return _timed(noop.delay, n)


def _child_arq(n: int) -> dict[str, float]:
    from arq import create_pool
    from arq.connections import RedisSettings

    async def main() -> dict[str, float]:
        pool = await create_pool(RedisSettings.from_dsn(URL), default_queue_name=NAME + "_arq")
        try:
            return await _timed_async(lambda: pool.enqueue_job("noop"), n)
        finally:
            await pool.aclose()

    return asyncio.run(main())


def _child_taskiq(n: int) -> dict[str, float]:
    sys.path.insert(0, PEERS)
    import taskiq_bench  # its broker factory (Redis streams or NATS JetStream, with BENCH_ENGINE)

    async def main() -> dict[str, float]:
        broker = taskiq_bench.make_broker("_request")
        noop = broker.task(task_name="noop")(taskiq_bench.noop.original_func)
        await broker.startup()
        try:
            return await _timed_async(noop.kiq, n)
        finally:
            await broker.shutdown()

    return asyncio.run(main())


def _child_saq(n: int) -> dict[str, float]:
    sys.path.insert(0, PEERS)
    import saq_bench

    async def main() -> dict[str, float]:
        queue = saq_bench.make_queue("_request")
        await queue.connect()
        try:
            return await _timed_async(lambda: queue.enqueue("noop"), n)
        finally:
            await queue.disconnect()

    return asyncio.run(main())


def _child_pgqueuer(n: int) -> dict[str, float]:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    async def main() -> dict[str, float]:
        connection = await asyncpg.connect(URL)
        try:
            queries = Queries(AsyncpgDriver(connection))
            await queries.install()
            return await _timed_async(lambda: queries.enqueue("noop", None), n)
        finally:
            await connection.close()

    return asyncio.run(main())


def _child_procrastinate(n: int) -> dict[str, float]:
    sys.path.insert(0, PEERS)
    import procrastinate_bench

    async def main() -> dict[str, float]:
        app = procrastinate_bench.app
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            return await _timed_async(procrastinate_bench.noop.configure(queue="single").defer_async, n)

    return asyncio.run(main())


CHILDREN: dict[str, Callable[[int], dict[str, float]]] = {
    "omniq-sync": _child_omniq_sync,
    "omniq-async": _child_omniq_async,
    "huey": _child_huey,
    "rq": _child_rq,
    "celery": _child_celery,
    "arq": _child_arq,
    "taskiq": _child_taskiq,
    "saq": _child_saq,
    "pgqueuer": _child_pgqueuer,
    "procrastinate": _child_procrastinate,
}
#: the synchronous APIs (the others are awaited)
SYNC = frozenset({"omniq-sync", "huey", "rq", "celery"})
LIBRARIES = {
    "sqlite": ["omniq-sync", "omniq-async", "huey"],
    "redis": ["omniq-sync", "omniq-async", "huey", "rq", "celery", "arq", "taskiq", "saq"],
    "postgres": ["omniq-sync", "omniq-async", "pgqueuer", "procrastinate", "saq"],
    "nats": ["omniq-sync", "omniq-async", "taskiq"],
    "file": ["omniq-sync", "omniq-async"],
}


def _peer(library: str, engine: str) -> Any:
    """run.py's Peer for a peer library (a venv of its own), or this file's for the peers run.py does not run."""
    import run

    if library == "taskiq":
        return run.TASKIQ_NATS if engine == "nats" else run.TASKIQ
    known = {"huey": run.HUEY, "saq": run.SAQ, "pgqueuer": run.PGQUEUER, "procrastinate": run.PROCRASTINATE}
    if library in known:
        return known[library]
    packages = {"rq": ("rq",), "celery": ("celery[redis]",), "arq": ("arq",)}[library]
    return run.Peer(library, library, packages, "", (library,))


def _run_child(library: str, engine: Any, n: int) -> dict[str, float]:
    from run import ensure_venv

    if library.startswith("omniq"):
        python, env = sys.executable, engine.omniq_env()
    else:
        python, env = ensure_venv(_peer(library, engine.name)), engine.peer_env()
    out = subprocess.run(
        [python, os.path.abspath(__file__), "--child", library, "-n", str(n)],
        env={**os.environ, **env, "PYTHONPATH": HERE},
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
    parser.add_argument("--engines", default="sqlite,redis,postgres,nats,file")
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
        print("| library | API | enqueue calls/s | call p50 µs | call p99 µs |")
        print("| --- | --- | --- | --- | --- |")
        for library, figures in rounds.items():
            cells = [_cell([f[key] for f in figures]) for key in ("rate", "p50_us", "p99_us")]
            print(f"| {library} | {'sync' if library in SYNC else 'async'} | {' | '.join(cells)} |")
        sync, asynchronous = rounds["omniq-sync"], rounds["omniq-async"]
        print(f"\nsync OmniQ / AsyncOmniQ (per round): {_cell(_ratios(sync, [asynchronous]), 2)}")
        for label, ours, kind in (("sync OmniQ", sync, True), ("AsyncOmniQ", asynchronous, False)):
            peers = [rounds[lib] for lib in rounds if not lib.startswith("omniq") and (lib in SYNC) == kind]
            if peers:
                print(
                    f"{label} / best {'sync' if kind else 'async'} peer (per round): {_cell(_ratios(ours, peers), 2)}"
                )
        print()


def _ratios(ours: list[dict[str, float]], peers: list[list[dict[str, float]]]) -> list[float]:
    """Per round: our rate over the best of the peers' in that round."""
    return [o["rate"] / max(p[index]["rate"] for p in peers) for index, o in enumerate(ours)]


if __name__ == "__main__":
    main()
