"""Is the NATS backend's hand-written client worth keeping? Mux and Bucket against nats-py's own API.

    OMNIQ_NATS_URL=nats://127.0.0.1:4222 python benchmarks/nats_client_cost.py [rounds]

omniq_nats holds two hand-written pieces over nats-py:

* ``Mux`` (:mod:`omniq_nats.jetstream`): a batch of requests answered on one
  inbox subscription, one future and one timeout per batch;
* ``Bucket`` (:mod:`omniq_nats.kv`): KV direct gets and revision-checked
  writes published straight to the bucket's stream through the ``Mux``.

Four lanes swap them, in this process only, for what nats-py offers:

* ``hand``: both as shipped;
* ``requests``: every ``Mux`` batch becomes ``asyncio.gather`` of
  ``nc.request`` (what ``js.publish`` sends); the KV calls go through it too;
* ``kv``: every KV get / put / compare-and-set of the claim and finish paths
  becomes ``gather`` of ``js.key_value(...)`` ``get`` / ``put`` /
  ``update(last=...)`` (ticket acks and enqueue's pipelined create still use the ``Mux``);
* ``library``: both swapped.

``hand`` against ``requests`` is what the ``Mux`` is worth, ``hand`` against
``kv`` what ``Bucket`` is worth. Everything else (the queue's algorithm,
pulls, stream calls) is the same code in every lane.

Two hot-path figures, the lanes interleaved in every round (the order turns
each round) on a fresh prefix each, medians and ranges over the rounds:

* single enqueue: ``ENQUEUES`` sequential ``enqueue`` calls, enqueues per second;
* drain: ``DRAIN`` tasks enqueued (untimed), then ``claim_ready`` batches of
  ``BATCH`` and ``finish`` with a fused result each, until empty; tasks per second.

Each also reports this process's CPU time per operation: on a machine shared
with other work the wall-clock rates scatter widely, the client's CPU much
less, and the client's CPU is what the hand-written parts save.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import nats.js.errors

from omniq.models import Outcome, OutcomeKind, TaskResult, TaskStatus
from omniq.testing import make_task
from omniq_nats import NatsResultStorage, NatsTaskQueue, drop_prefix
from omniq_nats.jetstream import Mux
from omniq_nats.kv import Bucket, Entry

URL = os.environ.get("OMNIQ_NATS_URL", "nats://127.0.0.1:4222")
ENQUEUES, DRAIN, BATCH = 1000, 2000, 100
TIMEOUT = 10.0


# -- the library lane ------------------------------------------------------------------------------


async def _lib_request_many(self: Mux, requests: Sequence[tuple[str, bytes, Any]], timeout: float = TIMEOUT) -> Any:
    return list(await asyncio.gather(*(self.nc.request(s, p, timeout=timeout, headers=h) for s, p, h in requests)))


_handles: dict[int, Any] = {}


async def _kv(bucket: Bucket) -> Any:
    handle = _handles.get(id(bucket))
    if handle is None:
        handle = _handles[id(bucket)] = await bucket.nc.jetstream().key_value(bucket.name)
    return handle


async def _lib_get_many(self: Bucket, keys: Sequence[str]) -> list[Entry | None]:
    kv = await _kv(self)

    async def one(key: str) -> Entry | None:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return Entry(entry.value or b"", entry.revision or 0, False, None)

    return list(await asyncio.gather(*(one(k) for k in keys)))


async def _lib_update_many(self: Bucket, items: Sequence[tuple[str, bytes, int]]) -> list[int | None]:
    kv = await _kv(self)

    async def one(key: str, value: bytes, last: int) -> int | None:
        try:
            return int(await kv.update(key, value, last=last))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    return list(await asyncio.gather(*(one(*item) for item in items)))


async def _lib_put_many(self: Bucket, items: Sequence[tuple[str, bytes]]) -> list[int]:
    kv = await _kv(self)
    return [int(r) for r in await asyncio.gather(*(kv.put(k, v) for k, v in items))]


_REQUESTS: list[tuple[type, str, Callable[..., Any]]] = [(Mux, "request_many", _lib_request_many)]
_KV: list[tuple[type, str, Callable[..., Any]]] = [
    (Bucket, "get_many", _lib_get_many),
    (Bucket, "update_many", _lib_update_many),
    (Bucket, "put_many", _lib_put_many),
]
LANES = {"hand": [], "requests": _REQUESTS, "kv": _KV, "library": _REQUESTS + _KV}


@contextmanager
def lane(name: str) -> Iterator[None]:
    """Run the block with the lane's parts swapped for nats-py's API (see the module's docstring)."""
    saved = [(cls, attr, cls.__dict__[attr]) for cls, attr, _ in _REQUESTS + _KV]
    for cls, attr, fn in LANES[name]:
        setattr(cls, attr, fn)
    try:
        yield
    finally:
        for cls, attr, fn in saved:
            setattr(cls, attr, fn)
        _handles.clear()


# -- the figures -----------------------------------------------------------------------------------


async def single_enqueue(prefix: str) -> tuple[float, float]:
    async with NatsTaskQueue(URL, prefix=prefix) as queue:
        tasks = [make_task() for _ in range(ENQUEUES)]
        await queue.enqueue(make_task())  # warm: inbox subscription, first requests
        start, cpu = time.perf_counter(), time.process_time()
        for task in tasks:
            await queue.enqueue(task)
        return _rates(ENQUEUES, start, cpu)


def _rates(count: int, start: float, cpu: float) -> tuple[float, float]:
    """(operations per second, client CPU µs per operation) since ``start`` / ``cpu``."""
    return count / (time.perf_counter() - start), (time.process_time() - cpu) / count * 1e6


async def drain(prefix: str) -> tuple[float, float]:
    async with NatsTaskQueue(URL, prefix=prefix) as queue, NatsResultStorage(URL, prefix=prefix) as results:
        await queue.enqueue_many([make_task() for _ in range(DRAIN)])
        done = 0
        start, cpu = time.perf_counter(), time.process_time()
        while done < DRAIN:
            held = await queue.claim_ready(["default"], BATCH, lease=30, worker_id="bench")
            if not held:
                raise RuntimeError(f"drain stalled at {done} of {DRAIN}")
            outcomes = []
            for task in held:
                assert task.lease_token is not None
                result = TaskResult(task_id=task.id, status=TaskStatus.SUCCEEDED, payload=b"\x00")
                outcomes.append(
                    Outcome(task_id=task.id, lease_token=task.lease_token, kind=OutcomeKind.SUCCEEDED, result=result)
                )
            accepted = await queue.finish(outcomes, results=results)
            done += sum(accepted)
        return _rates(DRAIN, start, cpu)


async def measure(figure: Callable[[str], Any], name: str) -> tuple[float, float]:
    prefix = f"bench{uuid.uuid4().hex[:10]}"
    try:
        with lane(name):
            rate, cpu = await figure(prefix)
            return float(rate), float(cpu)
    finally:
        await drop_prefix(URL, prefix)


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.0f} ({min(values):.0f}-{max(values):.0f})"


async def main(rounds: int) -> None:
    figures = {"single enqueue /s": single_enqueue, f"drain {DRAIN} (claim+finish) tasks/s": drain}
    seen: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    names = list(LANES)
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for title, figure in figures.items():
            for name in order:
                value, cpu = await measure(figure, name)
                seen.setdefault((title, name), []).append(value)
                cpus.setdefault((title, name), []).append(cpu)
                print(f"round {index + 1} {title:<36} {name:<8} {value:8.0f}/s {cpu:6.0f} µs CPU", flush=True)
    print(f"\n{'figure':<36} {'lane':<9} {'per s: median (range)':>22} {'hand/lane':>9}", end="")
    print(f" {'client CPU µs/op: median (range)':>34} {'lane/hand':>9}")
    for title in figures:
        hand = statistics.median(seen[(title, "hand")])
        hand_cpu = statistics.median(cpus[(title, "hand")])
        for name in names:
            rate, cpu = seen[(title, name)], cpus[(title, name)]
            print(f"{title:<36} {name:<9} {_summary(rate):>22} {hand / statistics.median(rate):9.2f}", end="")
            print(f" {_summary(cpu):>34} {statistics.median(cpu) / hand_cpu:9.2f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 4))
