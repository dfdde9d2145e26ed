"""Turning tasks into script arguments and script rows back into tasks; times as the scripts store them."""

from __future__ import annotations

import itertools
import logging
import secrets
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from omniq.base import claimed_task, decode_error, task_from_row as strict_task_from_row
from omniq.errors import SerializationError
from omniq.models import Outcome, Task, TaskStatus, decode_task, encode_result, encode_task

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence, Set

    from omniq.base import BaseResultStorage

__all__ = [
    "FINISH_CHUNK",
    "claim_args",
    "enqueue_calls",
    "enqueue_items",
    "enqueue_one_args",
    "extend_args",
    "finish_calls",
    "finish_handing_over",
    "finished_flags",
    "from_us",
    "leased_task_from_row",
    "leased_tasks",
    "task_from_row",
    "to_ms",
    "to_us",
]

logger = logging.getLogger("omniq.redis")

_error_encoder = msgspec.msgpack.Encoder()
_STATUSES = {status.value.encode(): status for status in TaskStatus}
_EMPTY = msgspec.Raw(b"\xa0")
#: this process's enqueue sequence: orders its tasks due in the same microsecond in READY.
#: outcomes per finish script call.
FINISH_CHUNK = 1000
_sequence = itertools.count(1)
_SEQUENCE_WRAP = 10**12  # 12 digits in the READY member


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)
_FLOAT_EXACT_US = 2**32 * 1_000_000


def to_us(value: datetime) -> int:
    """Return a datetime as integer microseconds since the epoch (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return (value - _EPOCH) // _MICRO


def to_ms(value: datetime) -> int:
    """Return a datetime as integer milliseconds since the epoch, rounded up."""
    return -(-to_us(value) // 1000)


def from_us(value: bytes | str | int) -> datetime:
    """Inverse of :func:`to_us`.

    Through a float when that is exact, about 40% cheaper than adding a
    timedelta (claimed rows carry several timestamps): before 2106 (2**32
    seconds) a double's error on the seconds is under half a microsecond,
    and ``fromtimestamp`` rounds to the nearest one.
    """
    micros = int(value)
    if 0 <= micros < _FLOAT_EXACT_US:
        return datetime.fromtimestamp(micros / 1_000_000, timezone.utc)
    return _EPOCH + timedelta(microseconds=micros)


def _lua_bytes(data: bytes) -> msgspec.Raw:
    """Bytes as a msgpack *str*: Redis's Lua cmsgpack cannot decode the bin types."""
    size = len(data)
    if size < 32:
        header = bytes((0xA0 | size,))
    elif size < 0x100:
        header = b"\xd9" + size.to_bytes(1, "big")
    elif size < 0x10000:
        header = b"\xda" + size.to_bytes(2, "big")
    else:
        header = b"\xdb" + size.to_bytes(4, "big")
    return msgspec.Raw(header + data)


def enqueue_items(tasks: Sequence[Task]) -> bytes:
    """The enqueue script's packed task list (see ``scripts._ENQUEUE``).

    Numbers travel as strings: Lua numbers are doubles and Redis would format
    large ones lossily when a script passes them on.
    """
    return _error_encoder.encode([_enqueue_item(task) for task in tasks])


def enqueue_calls(
    prefix: str, tasks: Sequence[Task], registered: Set[str], chunk_size: int
) -> tuple[list[tuple[str, list[Any]]], list[list[int]]]:
    """The enqueue script calls storing ``tasks``: one per queue and per ``chunk_size`` tasks.

    Returns the calls and, per call, the indexes in ``tasks`` of the tasks it carries. A queue not
    in ``registered`` is registered in QUEUES by its calls.

    The calls run in order (one pipeline), each storing its tasks in order, so grouping by queue
    keeps the batch's order within a queue. A dependency stored earlier in the batch must be
    stored before its dependant is counted (``Task.waiting``): when one lives in another queue, the
    calls follow the batch instead, one per run of consecutive tasks of a queue.
    """
    groups: dict[str, list[int]] = {}
    dependants = False
    for index, task in enumerate(tasks):
        groups.setdefault(task.queue, []).append(index)
        if task.depends_on:
            dependants = True
    runs: list[tuple[str, list[int]]] = list(groups.items())
    if dependants and _depends_across_queues(tasks):
        runs = []
        for index, task in enumerate(tasks):
            if runs and runs[-1][0] == task.queue:
                runs[-1][1].append(index)
            else:
                runs.append((task.queue, [index]))
    calls: list[tuple[str, list[Any]]] = []
    order: list[list[int]] = []
    for queue, indexes in runs:
        for start in range(0, len(indexes), chunk_size):
            chunk = indexes[start : start + chunk_size]
            items = enqueue_items([tasks[index] for index in chunk])
            calls.append(("enqueue", [prefix, queue, items, "0" if queue in registered else "1"]))
            order.append(chunk)
    return calls, order


def _depends_across_queues(tasks: Sequence[Task]) -> bool:
    """Whether a task of ``tasks`` depends on another of them in a different queue."""
    queue_of = {task.id: task.queue for task in tasks}
    return any(queue_of.get(dep, task.queue) != task.queue for task in tasks for dep in task.depends_on)


def _enqueue_item(task: Task) -> tuple[Any, ...]:
    created = to_us(task.created_at)
    if task.eta is None:
        eta = ""
        ready = created
    else:
        ready = to_us(task.eta)
        eta = str(ready)
    item: tuple[Any, ...] = (
        task.id,
        _lua_bytes(encode_task(task)),
        str(task.priority),
        eta,
        str(created),
        task.unique_key or "",
        "1" if task.paused else "0",
        str(task.attempts),
        str(task.max_retries),
        _ready_member(ready, task.id),
    )
    limits = task.limits
    depends_on = task.depends_on
    if limits is None and not depends_on:
        return item
    lim: Any = False  # msgpack false: Lua's "no limits" placeholder before the dependencies
    if limits is not None:
        numbers = (limits.concurrency, limits.rate, limits.burst)
        lim = (limits.key, *("" if number is None else repr(number) for number in numbers))
    if not depends_on:
        return (*item, lim)
    return (*item, lim, list(dict.fromkeys(depends_on)))  # each dependency counted once


def enqueue_one_args(task: Task) -> list[Any]:
    """The ARGV of ``scripts._ENQUEUE_ONE`` (a task with no eta: it is ready when created)."""
    created = to_us(task.created_at)
    return [
        task.id,
        task.queue,
        encode_task(task),
        str(task.priority),
        str(-task.priority),
        str(created),
        str(task.max_retries),
        _ready_member(created, task.id),
    ]


def _ready_member(ready_us: int, task_id: str) -> str:
    """The READY member "<ready time:016><seq:012>:<id>", with this process's sequence number."""
    return f"{max(ready_us, 0):016d}{next(_sequence) % _SEQUENCE_WRAP:012d}:{task_id}"


def claim_args(prefix: str, queue: str, limit: int, lease: float, worker_id: str, unless_handed: str = "") -> list[Any]:
    """The ARGV of ``lua_lease.CLAIM``: lease in µs, and a fresh token base (the script appends a counter).

    ``unless_handed``: the token base of a :func:`finish_handing_over` call ahead in the pipeline; the claim
    takes nothing when that finish leased tasks.
    """
    args = [prefix, queue, limit, max(int(lease * 1_000_000), 1), worker_id, secrets.token_hex(8) + "-"]
    if unless_handed:
        args.append(unless_handed)
    return args


def extend_args(prefix: str, leases: Mapping[str, str], lease: float) -> list[Any]:
    """The ARGV of ``lua_lease.EXTEND``: the lease in µs, then id, token pairs."""
    args: list[Any] = [prefix, max(int(lease * 1_000_000), 1)]
    for task_id, token in leases.items():
        args.extend((task_id, token))
    return args


def finish_calls(
    prefix: str, outcomes: Sequence[Outcome], results: BaseResultStorage | None
) -> list[tuple[str, list[Any]]]:
    """The finish script calls of ``outcomes``: one per ``FINISH_CHUNK``; fused when ``results`` is Redis's."""
    result_prefix = getattr(results, "prefix", "") if results is not None else ""
    fused = bool(result_prefix)
    return [
        ("finish", [prefix, result_prefix, _finish_items(outcomes[start : start + FINISH_CHUNK], fused)])
        for start in range(0, len(outcomes), FINISH_CHUNK)
    ]


def finish_handing_over(
    prefix: str,
    outcomes: Sequence[Outcome],
    results: BaseResultStorage | None,
    queue: str,
    limit: int,
    lease: float,
    worker_id: str,
) -> tuple[str, list[Any]]:
    """The finish script call of at most ``FINISH_CHUNK`` outcomes that hands the slots they free over.

    Its reply is (a flag per outcome, the rows leased); its last argument is its token base (for
    :func:`claim_args`'s ``unless_handed``).
    """
    [(name, args)] = finish_calls(prefix, outcomes, results)
    args += [queue, limit, max(int(lease * 1_000_000), 1), worker_id, secrets.token_hex(8) + "-"]
    return name, args


def finished_flags(replies: Sequence[list[Any]]) -> list[bool]:
    """The accepted flags of the finish scripts' replies, in order."""
    return [flag == 1 for reply in replies for flag in reply]


def _finish_items(outcomes: Sequence[Outcome], fused: bool) -> bytes:
    """The finish script's packed outcome list (see ``scripts._FINISH``)."""
    items = []
    for outcome in outcomes:
        result = outcome.result if fused else None
        items.append(
            (
                outcome.task_id,
                outcome.lease_token,
                outcome.kind.value,
                "" if outcome.eta is None else str(to_us(outcome.eta)),
                _EMPTY if outcome.error is None else _lua_bytes(_error_encoder.encode(outcome.error)),
                _EMPTY if result is None else _lua_bytes(encode_result(result)),
                "" if result is None or result.expires_at is None else str(to_ms(result.expires_at)),
            )
        )
    return _error_encoder.encode(items)


def _dt(value: bytes) -> Any:
    return from_us(value) if value else None


def _str(value: bytes) -> str | None:
    return value.decode() if value else None


def task_from_row(row: list[Any]) -> Task:
    """The task of a script's ROW, strictly (SerializationError when the blob or a field is corrupted)."""
    return strict_task_from_row(_build_task, row)


def leased_task_from_row(row: list[Any]) -> Task:
    """The task of a ROW just claimed or recovered: a corrupted one comes back salvaged, for the worker to fail."""
    return claimed_task(_build_task, row, _raw_fields)


def leased_tasks(rows: Sequence[list[Any]]) -> list[Task]:
    """The tasks of the ROWs a claim or a recovery returned; never raises for one row.

    A row that cannot even be salvaged (its blob is not a MessagePack map with
    an id, so no worker could report on it) is logged and left out: the script
    has already leased (or requeued) it, so its lease expires, recovery requeues
    it, and once its attempts are used up fails it (LeaseExpired); it never
    fails the batch it came in.
    """
    tasks = []
    for row in rows:
        try:
            tasks.append(leased_task_from_row(row))
        except SerializationError as exc:  # noqa: PERF203 - the failure path of one row
            logger.error("left out a task whose stored envelope is unreadable: %s", exc)
    return tasks


def _build_task(row: list[Any]) -> Task:
    """Build a task from a script's ROW: the enqueued blob overlaid with the hash's mutable fields.

    A field that is absent (None) keeps the blob's value; an empty one means None. ``waiting`` is
    the engine's alone: the hash's ``wt``, 0 when absent.
    """
    blob, status, eta, paused, attempts, token, deadline, worker, started, finished, updated, error, waiting = row
    task = decode_task(blob)
    changes: dict[str, Any] = {"status": _STATUSES[status]}
    if eta is not None:
        changes["eta"] = _dt(eta)
    if paused is not None:
        changes["paused"] = paused == b"1"
    if attempts is not None:
        changes["attempts"] = int(attempts)
    if token is not None:
        changes["lease_token"] = _str(token)
    if deadline is not None:
        changes["lease_expires_at"] = _dt(deadline)
    if worker is not None:
        changes["worker_id"] = _str(worker)
    if started is not None:
        changes["started_at"] = _dt(started)
    if finished is not None:
        changes["finished_at"] = _dt(finished)
    if updated is not None:
        changes["updated_at"] = _dt(updated)
    if error is not None:
        changes["error"] = decode_error(error) if error else None
    if waiting is not None:
        changes["waiting"] = int(waiting)
    elif task.waiting:
        changes["waiting"] = 0  # whatever the enqueued envelope said: the engine counts
    return msgspec.structs.replace(task, **changes)


def _raw_fields(row: list[Any]) -> dict[str, Any]:
    """What can be read of a corrupted ROW: the blob's map (if it is one) and the hash's lease fields."""
    blob, status, _, _, attempts, token, _, worker, *_ = row
    try:
        fields = msgspec.msgpack.decode(blob)
    except msgspec.DecodeError:
        fields = None
    fields = dict(fields) if isinstance(fields, dict) else {}
    for name, value in (("status", status), ("attempts", attempts), ("lease_token", token), ("worker_id", worker)):
        if value:
            fields[name] = value.decode(errors="replace")
    return fields
