"""What Prometheus metrics cost the worker: the drain with ``--metrics-port`` against without, interleaved.

    python benchmarks/metrics_overhead.py --engines sqlite,redis --rounds 7

Each round drains N no-op tasks (queued with one ``enqueue_many``) with one
``omniq worker --burst`` process without metrics and one with ``--metrics-port``
(the plugin enabled, /metrics served, the queue depth sampled), in alternating
order, on a fresh namespace each time; the drain itself is drain_compare.py's
(the same tree both times, ``--tree``, default this one). Prints per engine the
median and range of the rate (jobs/s) and of the worker's CPU ms per 1,000
tasks, and the median (range) over the rounds of on/off for the rate and
off/on for the CPU (> 0.9 in both: within 10 %).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import Channel, drain_rate, spawn, stop  # noqa: E402
from drain_compare import _ENQUEUE, ROOT, _children_cpu, _cleanup, _env, _ratio, _summary  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def drain(tree: str, engine: str, n: int, metrics: bool, timeout: float) -> tuple[float, float]:
    """One burst worker drains ``n`` queued no-op tasks, with or without metrics: (jobs/s, CPU ms per 1,000)."""
    tag = "bench" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="omniq-metrics-") as workdir:
        try:
            env = _env(tree, engine, workdir, tag, None, n)
            subprocess.run([sys.executable, "-c", _ENQUEUE, str(n)], env=env, cwd=HERE, check=True, timeout=timeout)
            channel = Channel()
            env = _env(tree, engine, workdir, tag, channel, n)
            command = [sys.executable, "-m", "omniq", "--log-level", "WARNING", "worker", "omniq_app:app", "--burst"]
            if metrics:
                command += ["--metrics-port", str(_free_port())]
            cpu_before = _children_cpu()
            proc = spawn(command, env, HERE, os.path.join(workdir, "worker.log"))
            try:
                report = channel.receive(timeout)
                proc.wait(timeout)
            finally:
                stop(proc)
                channel.close()
            return drain_rate(report), (_children_cpu() - cpu_before) * 1000 / (n / 1000)
        finally:
            _cleanup(engine, tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", default=ROOT, help="source tree to run (default: this one)")
    parser.add_argument("--engines", default="sqlite,redis")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("-n", type=int, default=10000, help="tasks per drain")
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args()
    started = time.time()
    print(f"command: python benchmarks/metrics_overhead.py {' '.join(sys.argv[1:])}")
    print(f"nproc {os.cpu_count()}, N={args.n}, {args.rounds} rounds, order alternating")
    rows: list[str] = []
    for engine in args.engines.split(","):
        rates: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        for round_no in range(args.rounds):
            for metrics in (False, True) if round_no % 2 == 0 else (True, False):
                rate, cpu = drain(args.tree, engine, args.n, metrics, args.timeout)
                rates[metrics].append(rate)
                cpus[metrics].append(cpu)
        rate_ratio = _ratio([on / off for off, on in zip(rates[False], rates[True], strict=True)])
        cpu_ratio = _ratio([off / on for off, on in zip(cpus[False], cpus[True], strict=True)])
        rows.append(
            f"| {engine} | {_summary(rates[False])} | {_summary(rates[True])} | {rate_ratio} "
            f"| {_summary(cpus[False])} | {_summary(cpus[True])} | {cpu_ratio} |"
        )
        print(rows[-1], flush=True)
    print(
        "\n| engine | off jobs/s | on jobs/s | on/off | off CPU ms / 1,000 tasks | on | off/on (CPU) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        sep="\n",
    )
    print(f"\n{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
