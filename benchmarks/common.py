"""Shared, stdlib-only helpers of the benchmark scripts (OmniQ's and every peer's venv imports this).

The side channel is one UDP socket on 127.0.0.1 owned by the producer:

* drain: the no-op task counts its calls in the worker process; the first call
  notes ``time.time()``, the ``BENCH_DRAIN_N``-th call sends
  ``{"first": t_first, "last": t_last, "count": n}``. The drain rate is
  ``n / (last - first)``: from the first job's start to the last job's end,
  measured inside the worker process, excluding worker start-up.
* latency: the ping task sends ``{"seq": seq, "t": time.time()}`` as its first
  act. The producer notes ``time.time()`` right before each enqueue call and
  waits for that ping before the next enqueue.

Both sides run on this machine, so ``time.time()`` is one clock.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

#: environment variable: the producer's UDP port.
PORT_ENV = "BENCH_PORT"
#: environment variable: how many no-op calls end the drain.
DRAIN_N_ENV = "BENCH_DRAIN_N"

_state: dict[str, Any] = {"count": 0, "first": 0.0, "sock": None}


def _sock() -> socket.socket:
    sock = _state["sock"]
    if sock is None:
        sock = _state["sock"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return sock


def _send(message: dict[str, Any]) -> None:
    port = int(os.environ.get(PORT_ENV, "0"))
    if port:
        _sock().sendto(json.dumps(message).encode(), ("127.0.0.1", port))


def count_noop() -> None:
    """The whole body of every library's no-op task: count the call, report the Nth."""
    count = _state["count"] = _state["count"] + 1
    if count == 1:
        _state["first"] = time.time()
    if count == int(os.environ.get(DRAIN_N_ENV, "0")):
        _send({"first": _state["first"], "last": time.time(), "count": count})


def report_ping(seq: int) -> None:
    """The whole body of every library's latency task: report when it started."""
    _send({"seq": seq, "t": time.time()})


class Channel:
    """The producer's end of the side channel."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def env(self, drain_n: int = 0) -> dict[str, str]:
        """Environment for a worker process that reports to this channel."""
        env = dict(os.environ)
        env[PORT_ENV] = str(self.port)
        env[DRAIN_N_ENV] = str(drain_n)
        return env

    def receive(self, timeout: float, want: Callable[[dict[str, Any]], bool] = lambda m: True) -> dict[str, Any]:
        """The next message that ``want`` accepts; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the worker")
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError as exc:
                raise TimeoutError("no message from the worker") from exc
            message = json.loads(data)
            if want(message):
                return message

    def close(self) -> None:
        self.sock.close()


def drain_rate(message: dict[str, Any]) -> float:
    """Jobs per second of a drain report."""
    return message["count"] / max(message["last"] - message["first"], 1e-9)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    """p50 / p99 / mean in milliseconds."""
    ms = [x * 1000 for x in latencies_s]
    return {
        "latency_p50_ms": percentile(ms, 50),
        "latency_p99_ms": percentile(ms, 99),
        "latency_mean_ms": statistics.fmean(ms),
    }


def spawn(cmd: list[str], env: dict[str, str], cwd: str, log_path: str) -> subprocess.Popen[bytes]:
    """Start a worker process in its own process group (``cwd`` on its path), output to ``log_path``."""
    log = open(log_path, "ab")
    env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (cwd, env.get("PYTHONPATH", "")) if p)}
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGINT the worker's process group, then SIGTERM, then SIGKILL."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout if sig != signal.SIGKILL else 5)
            return
        except subprocess.TimeoutExpired:
            continue


def measure_latency(
    channel: Channel, enqueue_ping: Callable[[int], Any], n: int, timeout: float = 60.0
) -> dict[str, float]:
    """Warm up with one ping (waits out worker start-up), then ``n`` pings one at a time."""
    enqueue_ping(-1)
    channel.receive(timeout, lambda m: m.get("seq") == -1)
    latencies = []
    for seq in range(n):
        before = time.time()
        enqueue_ping(seq)
        message = channel.receive(timeout, lambda m, s=seq: m.get("seq") == s)
        latencies.append(message["t"] - before)
    return latency_summary(latencies)


async def measure_latency_async(
    channel: Channel, enqueue_ping: Callable[[int], Any], n: int, timeout: float = 60.0
) -> dict[str, float]:
    """:func:`measure_latency` for an async producer: waits in a thread so the loop keeps running."""
    import asyncio

    loop = asyncio.get_running_loop()

    async def wait_for(seq: int) -> dict[str, Any]:
        return await loop.run_in_executor(None, lambda: channel.receive(timeout, lambda m: m.get("seq") == seq))

    await enqueue_ping(-1)
    await wait_for(-1)
    latencies = []
    for seq in range(n):
        waiter = asyncio.ensure_future(wait_for(seq))
        before = time.time()
        await enqueue_ping(seq)
        message = await waiter
        latencies.append(message["t"] - before)
    return latency_summary(latencies)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line the runner reads."""
    sys.stdout.write("BENCH_RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def peer_args(*, worker_flag: bool = False) -> Any:
    """The command line every peer script takes (run.py passes the same sizes to all).

    ``worker_flag`` adds ``--worker``, for scripts that are their own worker process.
    """
    import argparse

    parser = argparse.ArgumentParser()
    if worker_flag:
        parser.add_argument("--worker", action="store_true", help="run as the worker process")
    parser.add_argument("--n-single", type=int, default=2000)
    parser.add_argument("--n-bulk", type=int, default=10000)
    parser.add_argument("--n-latency", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=240.0)
    return parser.parse_args()
