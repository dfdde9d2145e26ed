"""Drain rate of two source trees of OmniQ, interleaved: does a change slow the worker down?

    # a worktree of the commit to compare against, then rounds of both trees, alternating
    git worktree add --detach /tmp/omniq-base <commit>
    python benchmarks/drain_compare.py --base /tmp/omniq-base --engines sqlite,redis --rounds 7

Each round drains N no-op tasks (already queued with one ``enqueue_many``) with one
``omniq worker --burst`` process of each tree, in alternating order (base first in odd
rounds), on a fresh namespace each time (an SQLite file in a temp dir, a Redis key prefix, a PostgreSQL
schema, a NATS prefix).
The rate is measured inside the worker exactly as ``omniq_bench.py``'s drain (``common.py``:
first job start to N-th job end). Each tree runs with ``PYTHONPATH`` set to its
``packages/*/src``, ahead of the editable installs, so one interpreter serves both.
``--log-levels`` runs each tree at each level (``WARNING`` is what run.py's workers use;
``default`` gives no ``--log-level``, as a user typing ``omniq worker APP`` does), and
``--log-format`` the format of the new tree.

Prints, per engine and level, each tree's median and range (jobs/s) and the new/base ratio's
median and range over the rounds (each round's ratio compares the two runs of that round);
then the same for the worker process's CPU time (user + system, from start-up to exit, in ms
per 1,000 tasks; the ratio is base/new so that > 1 means new is better in both tables), which
other work on a shared machine disturbs much less than the wall-clock rate.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from common import Channel, drain_rate, spawn, stop  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
URLS = {
    "redis": REDIS_URL,
    "postgres": os.environ.get("BENCH_POSTGRES_URL", "postgresql://127.0.0.1:5432/test"),
    "nats": os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222"),
}


def _pythonpath(tree: str) -> str:
    packages = os.path.join(tree, "packages")
    return os.pathsep.join(os.path.join(packages, name, "src") for name in sorted(os.listdir(packages)))


def _env(tree: str, engine: str, workdir: str, tag: str, channel: Channel | None, n: int) -> dict[str, str]:
    source = channel.env(n) if channel is not None else dict(os.environ)
    env = {k: v for k, v in source.items() if not k.startswith("OMNIQ_")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([HERE, _pythonpath(tree)]),
            "OMNIQ_BACKEND": engine,
            "OMNIQ_BASE_DIR": workdir,
            "OMNIQ_KEY_PREFIX": tag,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if engine in URLS:
        env["OMNIQ_URL"] = URLS[engine]
    return env


_ENQUEUE = """
import anyio, sys
from omniq_app import app, noop
async def main():
    async with app:
        await app.enqueue_many(noop, [() for _ in range(int(sys.argv[1]))])
        await app.flush_events()
anyio.run(main)
"""


def _cleanup(engine: str, tag: str) -> None:
    if engine in ("postgres", "nats"):
        from processes_scaling import _drop

        _drop(engine, {"OMNIQ_KEY_PREFIX": tag})
        return
    if engine != "redis":
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{tag}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain_once(
    tree: str, engine: str, n: int, level: str, log_format: str | None, timeout: float
) -> tuple[float, float]:
    """One burst worker of ``tree`` drains ``n`` queued no-op tasks: its rate (jobs/s) and CPU ms per 1,000 tasks."""
    tag = "bench" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="omniq-drain-") as workdir:
        try:
            env = _env(tree, engine, workdir, tag, None, n)
            subprocess.run([sys.executable, "-c", _ENQUEUE, str(n)], env=env, cwd=HERE, check=True, timeout=timeout)
            channel = Channel()
            env = _env(tree, engine, workdir, tag, channel, n)
            chosen = [] if level == "default" else ["--log-level", level]
            command = [sys.executable, "-m", "omniq", *chosen, "worker", "omniq_app:app", "--burst"]
            if log_format is not None:
                command += ["--log-format", log_format]
            log = os.path.join(workdir, "worker.log")
            cpu_before = _children_cpu()
            proc = spawn(command, env, HERE, log)
            try:
                report = channel.receive(timeout)
                proc.wait(timeout)
            finally:
                stop(proc)
                channel.close()
            cpu_ms = (_children_cpu() - cpu_before) * 1000 / (n / 1000)
            return drain_rate(report), cpu_ms
        finally:
            _cleanup(engine, tag)


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def _ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="source tree to compare against (a git worktree)")
    parser.add_argument("--new", default=ROOT, help="source tree under test (default: this one)")
    parser.add_argument("--engines", default="sqlite,redis")
    parser.add_argument("--log-levels", default="WARNING", help="comma-separated, e.g. WARNING,INFO")
    parser.add_argument("--log-format", default=None, help="passed to the new tree's worker (text or json)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-n", type=int, default=10000, help="tasks per drain")
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args()
    started = time.time()
    print(f"command: python benchmarks/drain_compare.py {' '.join(sys.argv[1:])}")
    print(f"nproc {os.cpu_count()}, N={args.n}, {args.rounds} rounds, order alternating")
    rows: list[str] = []
    cpu_rows: list[str] = []
    for engine in args.engines.split(","):
        for level in args.log_levels.split(","):
            rates: dict[str, list[float]] = {"base": [], "new": []}
            cpus: dict[str, list[float]] = {"base": [], "new": []}
            for round_no in range(args.rounds):
                order = [("base", args.base), ("new", args.new)]
                if round_no % 2:
                    order.reverse()
                for name, tree in order:
                    fmt = args.log_format if name == "new" else None
                    rate, cpu = drain_once(tree, engine, args.n, level, fmt, args.timeout)
                    rates[name].append(rate)
                    cpus[name].append(cpu)
            ratio = _ratio([new / base for base, new in zip(rates["base"], rates["new"], strict=True)])
            rows.append(f"| {engine} | {level} | {_summary(rates['base'])} | {_summary(rates['new'])} | {ratio} |")
            cpu_ratio = _ratio([base / new for base, new in zip(cpus["base"], cpus["new"], strict=True)])
            cpu_rows.append(
                f"| {engine} | {level} | {_summary(cpus['base'])} | {_summary(cpus['new'])} | {cpu_ratio} |"
            )
            print(rows[-1], cpu_rows[-1], sep="\n", flush=True)
    print("\n| engine | log level | base jobs/s median (range) | new jobs/s median (range) | new/base median (range) |")
    print("|---|---|---|---|---|")
    print(*rows, sep="\n")
    print("\n| engine | log level | base worker CPU ms / 1,000 tasks | new | base/new median (range) |")
    print("|---|---|---|---|---|")
    print(*cpu_rows, sep="\n")
    print(f"\n{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
