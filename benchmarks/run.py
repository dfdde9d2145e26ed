"""Run OmniQ and its peers on the same engine, in one run, and write benchmarks/results/<engine>.md.

    python benchmarks/run.py sqlite redis postgres nats [--quick] [--concurrency 10] [--peers huey,saq]

Run it with the interpreter that has omniq and its backends installed (it runs OmniQ's scenarios with
itself). Each peer library is installed into its own venv under benchmarks/.venvs/<name> on first use
(python3 -m venv + pip) and runs its scenarios there. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
VENVS = os.path.join(HERE, ".venvs")
RESULTS = os.path.join(HERE, "results")

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")


@dataclass(frozen=True)
class Peer:
    """A peer library: its venv, what pip installs there, its script under peers/."""

    name: str
    venv: str
    packages: tuple[str, ...]
    script: str
    dists: tuple[str, ...]  # distributions whose versions are reported
    env: dict[str, str] = field(default_factory=dict)


HUEY = Peer("huey", "huey", ("huey", "redis"), "huey_bench.py", ("huey",))
TASKIQ = Peer("taskiq", "taskiq", ("taskiq", "taskiq-redis"), "taskiq_bench.py", ("taskiq", "taskiq-redis"))
SAQ = Peer("saq", "saq", ("saq[postgres]", "redis"), "saq_bench.py", ("saq",))
PGQUEUER = Peer("pgqueuer", "pgqueuer", ("pgqueuer", "asyncpg"), "pgqueuer_bench.py", ("pgqueuer",))
PROCRASTINATE = Peer("procrastinate", "procrastinate", ("procrastinate",), "procrastinate_bench.py", ("procrastinate",))
TASKIQ_NATS = Peer(
    "taskiq-nats", "taskiq_nats", ("taskiq", "taskiq-nats"), "taskiq_bench.py", ("taskiq", "taskiq-nats")
)

PEERS: dict[str, list[Peer]] = {
    "sqlite": [HUEY],
    "redis": [HUEY, TASKIQ, SAQ],
    "postgres": [PGQUEUER, PROCRASTINATE, SAQ],
    "nats": [TASKIQ_NATS],
}

METRICS = [  # key, label, higher is better
    ("enqueue_single", "enqueue one at a time (jobs/s)", True),
    ("enqueue_bulk", "bulk enqueue (jobs/s)", True),
    ("drain", "drain, 1 worker process (jobs/s)", True),
    ("latency_p50_ms", "enqueue-to-start latency p50 (ms)", False),
    ("latency_p99_ms", "enqueue-to-start latency p99 (ms)", False),
]


def ensure_venv(peer: Peer) -> str:
    """The peer venv's python, creating the venv and installing the peer on first use."""
    path = os.path.join(VENVS, peer.venv)
    python = os.path.join(path, "bin", "python")
    marker = os.path.join(path, ".bench-installed")
    if not os.path.exists(marker):
        print(f"# installing {' '.join(peer.packages)} into {path}", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", path], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *peer.packages], check=True)
        with open(marker, "w") as fh:
            fh.write(" ".join(peer.packages) + "\n")
    return python


def dist_versions(python: str, dists: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import json,sys\nfrom importlib.metadata import version\n"
        "print(json.dumps({d: version(d) for d in sys.argv[1:]}))"
    )
    out = subprocess.run([python, "-c", code, *dists], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# -- engine namespaces -------------------------------------------------------------------------------


class Engine:
    """One engine's isolated namespace for this run: a temp dir, a key prefix, a database or stream prefix."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tag = "bench" + uuid.uuid4().hex[:8]
        self.workdir = tempfile.mkdtemp(prefix=f"omniq-bench-{name}-")
        self.url = ""
        self.server_version = ""

    async def setup(self) -> None:
        if self.name == "redis":
            import redis.asyncio as redis

            client = redis.Redis.from_url(REDIS_URL)
            self.server_version = "Redis " + (await client.info("server"))["redis_version"]
            await client.aclose()
            self.url = REDIS_URL
        elif self.name == "postgres":
            import asyncpg

            conn = await asyncpg.connect(PG_ADMIN_URL)
            await conn.execute(f'CREATE DATABASE "{self.tag}"')
            self.server_version = "PostgreSQL " + await conn.fetchval("SHOW server_version")
            await conn.close()
            self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.tag
        elif self.name == "nats":
            import nats

            nc = await nats.connect(NATS_URL)
            self.server_version = "nats-server " + str(nc._server_info.get("version", "?"))
            await nc.close()
            self.url = NATS_URL
        else:
            import sqlite3

            self.server_version = "SQLite " + sqlite3.sqlite_version

    async def cleanup(self) -> None:
        """Remove everything this run created (only names carrying this run's tag)."""
        if self.name == "redis":
            import redis.asyncio as redis

            client = redis.Redis.from_url(REDIS_URL)
            async for key in client.scan_iter(match=f"*{self.tag}*", count=1000):
                await client.delete(key)
            await client.aclose()
        elif self.name == "postgres":
            import asyncpg

            conn = await asyncpg.connect(PG_ADMIN_URL)
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.tag}" WITH (FORCE)')
            await conn.close()
        elif self.name == "nats":
            import nats

            nc = await nats.connect(NATS_URL)
            js = nc.jetstream()
            for info in await js.streams_info():
                if self.tag.lower() in info.config.name.lower():
                    await js.delete_stream(info.config.name)
            await nc.close()
        logs = os.path.join(RESULTS, "logs", self.name)  # worker logs of the last run, kept (gitignored)
        shutil.rmtree(logs, ignore_errors=True)
        os.makedirs(logs)
        for entry in os.listdir(self.workdir):
            if entry.endswith(".log"):
                shutil.copy(os.path.join(self.workdir, entry), logs)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def omniq_env(self) -> dict[str, str]:
        env = {"OMNIQ_BACKEND": self.name, "OMNIQ_BASE_DIR": self.workdir, "OMNIQ_KEY_PREFIX": self.tag}
        if self.url:
            env["OMNIQ_URL"] = self.url
        return env

    def peer_env(self) -> dict[str, str]:
        return {"BENCH_ENGINE": self.name, "BENCH_URL": self.url, "BENCH_WORKDIR": self.workdir, "BENCH_NAME": self.tag}


# -- running -----------------------------------------------------------------------------------------


def run_script(python: str, script: str, env_extra: dict[str, str], sizes: list[str], timeout: float) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNIQ_", "BENCH_"))}
    env.update(env_extra)
    env["PYTHONUNBUFFERED"] = "1"
    try:
        proc = subprocess.run(
            [python, script, *sizes],
            env=env,
            cwd=os.path.dirname(script),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


def fmt(value: Any, key: str) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    return f"{value:.1f}" if key.endswith("_ms") else f"{value:,.0f}"


def ratio(omniq: Any, peer: Any, higher_better: bool) -> str:
    if not isinstance(omniq, (int, float)) or not isinstance(peer, (int, float)) or not omniq or not peer:
        return "—"
    return f"{(omniq / peer) if higher_better else (peer / omniq):.2f}×"


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    peers = names[1:]
    head = ["metric", *names, *[f"OmniQ/{p}" for p in peers]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, higher in METRICS:
        row = [
            label,
            *[fmt(results[n].get(key), key) for n in names],
            *[ratio(results["OmniQ"].get(key), results[p].get(key), higher) for p in peers],
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine_facts() -> list[str]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return [
        f"nproc: {os.cpu_count()}",
        f"CPU: {cpu or platform.processor()}",
        f"Python: {platform.python_version()} ({platform.python_implementation()})",
        f"OS: {platform.platform()}",
    ]


def run_round(engine_name: str, args: argparse.Namespace, sizes: list[str], versions: dict[str, str]) -> dict[str, Any]:
    """One run of OmniQ and then each peer, on a fresh namespace of the engine."""
    engine = Engine(engine_name)
    asyncio.run(engine.setup())
    results: dict[str, dict[str, Any]] = {}
    try:
        print(f"# {engine_name}: OmniQ", file=sys.stderr)
        results["OmniQ"] = run_script(
            sys.executable,
            os.path.join(HERE, "omniq_bench.py"),
            engine.omniq_env(),
            [*sizes, "--workdir", engine.workdir],
            args.script_timeout,
        )
        versions.update(dist_versions(sys.executable, ("omniq-core", f"omniq-{engine_name}")))
        wanted = set(args.peers.split(",")) if args.peers else None
        for peer in PEERS[engine_name]:
            if wanted is not None and peer.name not in wanted:
                continue
            print(f"# {engine_name}: {peer.name}", file=sys.stderr)
            try:
                python = ensure_venv(peer)
            except subprocess.CalledProcessError as exc:
                results[peer.name] = {"error": f"install failed: {exc}"}
                continue
            versions.update(dist_versions(python, peer.dists))
            results[peer.name] = run_script(
                python,
                os.path.join(HERE, "peers", peer.script),
                {**engine.peer_env(), **peer.env},
                sizes,
                args.script_timeout,
            )
    finally:
        asyncio.run(engine.cleanup())
    versions["engine"] = engine.server_version
    return results


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One library's rounds as one result: the median of each figure over the rounds that have it."""
    ok = [run for run in runs if "error" not in run]
    if not ok:
        return runs[-1]
    combined: dict[str, Any] = dict(ok[0])
    for key in {key for run in ok for key in run}:
        values = [run[key] for run in ok if isinstance(run.get(key), (int, float))]
        if values:
            combined[key] = statistics.median(values)
    failed = [run["error"] for run in runs if "error" in run]
    if failed:
        combined["warning"] = f"{len(failed)} of {len(runs)} rounds failed, the last: {failed[-1]}"
    return combined


def ratio_ranges(rounds: list[dict[str, dict[str, Any]]], peers: list[str]) -> str:
    """The per-round ratios of each figure, as min–max over the rounds where both ran."""
    head = ["metric", *[f"OmniQ/{p}" for p in peers]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, higher in METRICS:
        cells = []
        for peer in peers:
            values = []
            for results in rounds:
                omniq, other = results.get("OmniQ", {}).get(key), results.get(peer, {}).get(key)
                if isinstance(omniq, (int, float)) and isinstance(other, (int, float)) and omniq and other:
                    values.append(omniq / other if higher else other / omniq)
            cells.append(f"{min(values):.2f}×–{max(values):.2f}×" if values else "—")
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def run_engine(engine_name: str, args: argparse.Namespace, command: str) -> str:
    sizes = [
        "--n-single",
        str(args.n_single),
        "--n-bulk",
        str(args.n_bulk),
        "--n-latency",
        str(args.n_latency),
        "--concurrency",
        str(args.concurrency),
        "--timeout",
        str(args.timeout),
    ]
    versions: dict[str, str] = {}
    started = time.time()
    rounds = []
    for number in range(args.repeat):
        if args.repeat > 1:
            print(f"# {engine_name}: round {number + 1} of {args.repeat}", file=sys.stderr)
        rounds.append(run_round(engine_name, args, sizes, versions))
    server_version = versions.pop("engine", "")
    names = list(dict.fromkeys(name for results in rounds for name in results))
    results = {name: combine([r[name] for r in rounds if name in r]) for name in names}
    elapsed = time.time() - started

    out = [
        f"# {engine_name}: OmniQ vs peers",
        "",
        f"Command: `{command}`  ",
        f"Run: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {elapsed:.0f} s; "
        f"N: single={args.n_single}, bulk={args.n_bulk}, drain={args.n_bulk}, latency={args.n_latency}; "
        f"concurrency {args.concurrency} for every worker"
        + (f"; {args.repeat} rounds, each figure the median over them" if args.repeat > 1 else ""),
        "",
        table(results),
        "",
        "Ratios: OmniQ/peer for throughput, peer/OmniQ for latency, so > 1 always means OmniQ is better.",
        "",
        "Extra OmniQ drain figures (same run; stricter: include the last batch's result/event writes "
        "and shutdown): "
        f"first job start → burst worker exit {fmt(results['OmniQ'].get('drain_first_start_to_exit'), 'x')} jobs/s, "
        f"worker spawn → exit {fmt(results['OmniQ'].get('drain_spawn_to_exit'), 'x')} jobs/s.",
        "",
    ]
    if args.repeat > 1:
        out += [
            "Each round's own ratio, lowest–highest over the rounds (the libraries of a round ran back to back):",
            "",
            ratio_ranges(rounds, names[1:]),
            "",
        ]
    out += [
        "## How each ran",
        "",
    ]
    for name, res in results.items():
        out.append(
            f"- **{name}** {res.get('version', '')}: {res.get('notes', '')}"
            + (f" **ERROR**: {res['error']}" if "error" in res else "")
            + (f" **WARNING**: {res['warning']}" if "warning" in res else "")
        )
    out += [
        "",
        "## Machine",
        "",
        *[f"- {fact}" for fact in machine_facts()],
        f"- engine: {server_version}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        "",
    ]
    text = "\n".join(out)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{engine_name}.md"), "w") as fh:
        fh.write(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engines", nargs="+", choices=sorted(PEERS))
    parser.add_argument("--quick", action="store_true", help="smaller N (500 / 2,000 / 2,000 / 50)")
    parser.add_argument("--concurrency", type=int, default=10, help="tasks in flight per worker, every library")
    parser.add_argument("--peers", default=None, help="comma-separated subset of peers to run")
    parser.add_argument("--n-single", type=int, default=None)
    parser.add_argument("--n-bulk", type=int, default=None)
    parser.add_argument("--n-latency", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one worker report")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every library, figures are medians")
    parser.add_argument("--script-timeout", type=float, default=600.0, help="seconds one library's run may take")
    args = parser.parse_args()
    quick = {"n_single": 500, "n_bulk": 2000, "n_latency": 50}
    full = {"n_single": 2000, "n_bulk": 10000, "n_latency": 200}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    command = "python " + " ".join(["benchmarks/run.py", *sys.argv[1:]])
    for engine in args.engines:
        print(run_engine(engine, args, command))
        print()


if __name__ == "__main__":
    main()
