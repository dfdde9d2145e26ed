"""RedisTaskQueue: the lease state machine as Lua scripts.

Data (see :mod:`omniq_redis.keys`): one hash per task (the msgpack envelope
as enqueued plus the mutable fields), per queue a READY zset ordered by
(-priority, eta or created_at, enqueue sequence), a DELAYED zset by eta, a
LEASES zset by deadline and per-status zsets for list/count. Every state
change is one script (:mod:`omniq_redis.scripts`), atomically, on the
server's clock.

Dependencies: a waiting task (``wt`` > 0) is kept out of READY and DELAYED
until the script that ends its last dependency makes it ready (keys.py).

Round trips: ``enqueue_many`` one (a pipeline of one script per queue and
per 1,000 tasks); ``claim_ready`` one per queue asked until ``limit`` is
filled; ``extend`` and ``finish`` one for the whole batch (fused results
included), ``finish_and_claim`` too, for one queue; ``wait_for_work`` one check
plus one blocking BLPOP, with the claim script pipelined behind it for one queue.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
from redis import exceptions as rexc

from omniq.base import BaseResultStorage, BaseTaskQueue, Capability
from omniq.constants import DEFAULT_PREFIX
from omniq.errors import redact_url
from omniq.models import Outcome, Task, TaskStatus
from omniq.monitoring import QueueStats, TaskQuery, WorkerInfo
from omniq_redis import keys, operations, workers
from omniq_redis._codec import (
    FINISH_CHUNK,
    claim_args,
    extend_args,
    finish_calls,
    finish_handing_over,
    finished_flags,
    leased_tasks,
    task_from_row,
)
from omniq_redis.connection import check_url, redis_connection
from omniq_redis.enqueues import Enqueues
from omniq_redis.reads import block_time, count_members, newest_members
from omniq_redis.waits import blpop, blpop_then_claim

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


__all__ = ["RedisTaskQueue"]

#: how far ahead "no delayed task" counts as due (the wait is bounded by the caller's anyway).
_NO_DUE = 3600.0
#: expired leases handled per recover script call.
_RECOVER_CHUNK = 500


class RedisTaskQueue(BaseTaskQueue):
    """Task queue on Redis (standalone, 7.0+).

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://``; default
            ``redis://127.0.0.1:6379/0``.
        prefix: prefix of every key (``Settings.key_prefix``).
        **options: passed to ``redis.asyncio.Redis.from_url`` (``max_connections``...).
    """

    backend_name = "redis"
    capabilities = frozenset(
        {
            Capability.MULTI_PROCESS,
            Capability.MULTI_HOST,
            Capability.BLOCKING_WAIT,
            Capability.FUSED_RESULTS,
            Capability.DURABLE,
            Capability.FORK_SAFE,
            Capability.WORKER_REGISTRY,
            Capability.BLOCKING_READS,
            Capability.FLOW_CONTROL,
            Capability.QUEUE_PAUSE,
            Capability.DEPENDENCIES,
            Capability.BLOCKING_ENQUEUE,
        }
    )

    def __init__(self, url: str | None = None, *, prefix: str = DEFAULT_PREFIX, **options: Any) -> None:
        self.url = check_url(url)
        self.prefix = keys.validate_prefix(prefix)
        self._connection = redis_connection(self.url, options)
        # Blocking BLPOPs get their own pool so they never starve the scripts of connections.
        self._blocking = redis_connection(self.url, options, blocking=True, scripts=False)
        self._queue_keys: dict[str, keys.QueueKeys] = {}
        # queue -> when (anyio clock) its next delayed task is due, as of this client's last claim
        self._next_due: dict[str, float] = {}
        self._queues_key = keys.global_key(self.prefix, keys.QUEUES)
        self._paused_key = keys.global_key(self.prefix, keys.PAUSED)
        self._enqueues = Enqueues(self.prefix, self._keys)

    settings_options: ClassVar[Mapping[str, str]] = {"prefix": "key_prefix"}

    def __repr__(self) -> str:
        return f"RedisTaskQueue(url={redact_url(self.url)!r}, prefix={self.prefix!r})"

    async def connect(self) -> None:
        """Open the connection pools, load the scripts and check the eviction policy."""
        client = await self._connection.connect()
        await self._blocking.connect()
        await client.check_eviction_policy()

    async def close(self) -> None:
        """Close both pools (idempotent)."""
        self._enqueues.registered.clear()
        await self._blocking.close()
        await self._connection.close()

    async def _run(self, name: str, args: Sequence[Any], script_keys: Sequence[str] = ()) -> Any:
        """Run one script, driver errors translated."""
        client = await self._connection.client()
        with self._connection.errors():
            return await client.run(name, args, script_keys)

    async def _run_many(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run scripts in one pipelined round trip, driver errors translated."""
        client = await self._connection.client()
        with self._connection.errors():
            return await client.run_many(calls)

    def _keys(self, queue: str) -> keys.QueueKeys:
        found = self._queue_keys.get(queue)
        if found is None:
            found = self._queue_keys[queue] = keys.QueueKeys(self.prefix, queue)
        return found

    # -- enqueue -----------------------------------------------------------------------------------

    async def enqueue(self, task: Task) -> str:
        """Store a PENDING task (or return the id holding its unique key)."""
        enqueues = self._enqueues
        plain = enqueues.plain(task)
        with enqueues.registering():
            if plain is not None and await self._run("enqueue_one", *plain):
                return task.id
            return enqueues.stored(task, await self._run("enqueue", enqueues.general_args(task)))

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store tasks in one round trip: one script call per queue and per 1,000 tasks."""
        if not tasks:
            return []
        enqueues = self._enqueues
        calls, order = enqueues.calls(tasks)
        with enqueues.registering():
            replies = await self._run_many(calls)
        return enqueues.stored_many(tasks, order, replies)

    def enqueue_blocking(self, tasks: Sequence[Task]) -> list[str]:
        """:meth:`enqueue_many` in the calling thread: the same scripts, over the blocking transport."""
        if not tasks:
            return []
        blocking, enqueues = self._connection.current.blocking, self._enqueues
        with enqueues.registering(), self._connection.errors():
            if len(tasks) > 1:
                calls, order = enqueues.calls(tasks)
                return enqueues.stored_many(tasks, order, blocking.run_many(calls))
            task = tasks[0]
            plain = enqueues.plain(task)
            if plain is not None and blocking.run("enqueue_one", *plain):
                return [task.id]
            return [enqueues.stored(task, blocking.run("enqueue", enqueues.general_args(task)))]

    # -- claim -------------------------------------------------------------------------------------

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` ready tasks: one script per queue, in order, until filled.

        Priority order holds within a queue; across queues the earlier queue
        in ``queues`` is drained first (each queue lives in its own slot).
        """
        claimed: list[Task] = []
        for queue in queues:
            wanted = limit - len(claimed)
            if wanted <= 0:
                break
            self._keys(queue)
            args = claim_args(self.prefix, queue, wanted, lease, worker_id)
            claimed.extend(self._claimed(queue, await self._run("claim", args)))
        return claimed

    async def claim(
        self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str, wait: float = 0.0
    ) -> list[Task]:
        """Lease up to ``limit`` tasks, waiting up to ``wait`` seconds for one.

        With one queue an idle worker makes one round trip per wake-up: a BLPOP
        on the signal list with the claim script pipelined behind it on the
        blocking connection (Redis runs it as soon as the BLPOP returns). The
        claim leaves a token while READY is not empty (the BLPOP returns at once)
        and reports the next delayed eta, which bounds the next block. With
        several queues, the wake-up and the claim are separate calls.
        """
        if wait <= 0 or len(queues) != 1:
            return await super().claim(queues, limit, lease=lease, worker_id=worker_id, wait=wait)
        queue = queues[0]
        self._keys(queue)
        deadline = anyio.current_time() + wait
        while True:
            now = anyio.current_time()
            due = self._next_due.get(queue)
            block = min(deadline - now, due - now) if due is not None else 0.0
            args = claim_args(self.prefix, queue, limit, lease, worker_id)
            if block < 0.001:
                tasks = self._claimed(queue, await self._run("claim", args))
            else:
                tasks = await self._block_then_claim(queue, block, args)
            if tasks or anyio.current_time() >= deadline:
                return tasks

    async def _block_then_claim(self, queue: str, block: float, args: list[Any]) -> list[Task]:
        """BLPOP the queue's signal list, then run the claim script, in one round trip."""
        reply = await blpop_then_claim(self._blocking, self._keys(queue).signal, block, args)
        if isinstance(reply, rexc.NoScriptError):  # the server restarted: the pool reloads the script
            reply = await self._run("claim", args)
        elif isinstance(reply, Exception):
            with self._connection.errors():
                raise reply
        return self._claimed(queue, reply)

    def _claimed(self, queue: str, reply: list[Any]) -> list[Task]:
        """Decode a claim script's reply and note when the queue's next delayed task is due."""
        rows, next_in = reply
        self._next_due[queue] = anyio.current_time() + (next_in / 1_000_000 if next_in >= 0 else _NO_DUE)
        return leased_tasks(rows)

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Block on the queues' signal lists (BLPOP), at most until the next delayed eta."""
        block = await self._block_for(queues, timeout)
        if block is not None:
            await blpop(self._blocking, [self._keys(queue).signal for queue in queues], block)

    async def _block_for(self, queues: Sequence[str], timeout: float) -> float | None:
        """How long to block on the signal lists (one round trip): None when work is ready or no wait is due."""
        if timeout <= 0 or not queues:
            return None
        redis = (await self._connection.client()).redis
        with self._connection.errors():
            return await block_time(redis, [(queue, self._keys(queue)) for queue in queues], self._paused_key, timeout)

    # -- leases ------------------------------------------------------------------------------------

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push back every lease still held, in one script call."""
        if not leases:
            return set()
        reply = await self._run("extend", extend_args(self.prefix, leases, lease))
        return {task_id.decode() for task_id in reply}

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True for a :class:`RedisResultStorage` on the same server and database."""
        from omniq_redis.result_storage import RedisResultStorage

        return isinstance(results, RedisResultStorage) and results.url == self.url

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply outcomes (and fused results) in one round trip."""
        if not outcomes:
            return []
        return finished_flags(await self._run_many(finish_calls(self.prefix, outcomes, results)))

    async def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        *,
        results: BaseResultStorage | None = None,
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker_id: str,
    ) -> tuple[list[bool], list[Task]]:
        """For one queue, the finish script (it hands the slots freed over) and the claim behind it, one round trip."""
        if not outcomes or limit <= 0 or len(queues) != 1 or len(outcomes) > FINISH_CHUNK:
            return await super().finish_and_claim(
                outcomes, results=results, queues=queues, limit=limit, lease=lease, worker_id=worker_id
            )
        queue = queues[0]
        self._keys(queue)  # validates the name
        finish = finish_handing_over(self.prefix, outcomes, results, queue, limit, lease, worker_id)
        claim = claim_args(self.prefix, queue, limit, lease, worker_id, unless_handed=finish[1][-1])
        (flags, handed), claimed = await self._run_many([finish, ("claim", claim)])
        return finished_flags([flags]), leased_tasks(handed) if handed else self._claimed(queue, claimed)

    async def recover(self) -> list[Task]:
        """Requeue (or fail) RUNNING tasks whose lease deadline passed, queue by queue."""
        recovered: list[Task] = []
        for queue in await self._names(self._queues_key):
            while True:
                rows = await self._run("recover", [self.prefix, queue, _RECOVER_CHUNK])
                recovered.extend(leased_tasks(rows))
                if len(rows) < _RECOVER_CHUNK:
                    break
        return recovered

    # -- single-task control -----------------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task (its lease, if any, is lost)."""
        return bool(await self._run("cancel", [self.prefix, task_id]))

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal."""
        return bool(await self._run("set_paused", [self.prefix, task_id, "1" if paused else "0"]))

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume ``queue`` for every worker on the server (a resume wakes a waiting one)."""
        self._keys(queue)  # validates the queue name
        await self._run("set_queue_paused", [self.prefix, queue, "1" if paused else "0"])

    async def paused_queues(self) -> builtins.list[str]:
        """The paused queues, sorted."""
        return await self._names(self._paused_key)

    # -- inspection --------------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """Return one task, or None."""
        return (await self.get_many([task_id]))[0]

    def get_blocking(self, task_id: str) -> Task | None:
        """:meth:`get` in the calling thread: the same script, over the blocking transport."""
        with self._connection.errors():
            (row,) = self._connection.current.blocking.run("get", [self.prefix, task_id])
        return task_from_row(row) if row != 0 else None

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks in one round trip."""
        rows = await self._run("get", [self.prefix, *task_ids]) if task_ids else []
        return [task_from_row(row) if row != 0 else None for row in rows]

    async def _names(self, key: str) -> list[str]:
        """The members of a set of names (QUEUES, PAUSED), sorted."""
        redis = (await self._connection.client()).redis
        with self._connection.errors():
            return sorted(member.decode() for member in await redis.smembers(key))

    async def _zsets(self, queue: str | None, status: TaskStatus | None) -> list[str]:
        """The per-status zsets of ``queue``'s (every queue's) tasks of ``status`` (all of them for None)."""
        queues = [queue] if queue is not None else await self._names(self._queues_key)
        statuses = TaskStatus if status is None else (status,)
        return [self._keys(name).status(s.value) for name in queues for s in statuses]

    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Task]:
        """Return tasks newest first (by created_at), merged across queues and statuses."""
        zsets = await self._zsets(queue, status) if limit > 0 else []
        if not zsets:
            return []
        redis = (await self._connection.client()).redis
        with self._connection.errors():
            ids = await newest_members(redis, zsets, limit, offset)
        return [task for task in await self.get_many(ids) if task is not None]

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks by status and queue (ZCARD of the per-status zsets)."""
        zsets = await self._zsets(queue, status)
        redis = (await self._connection.client()).redis
        with self._connection.errors():
            return await count_members(redis, zsets) if zsets else 0

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks by queue and status, in batches of a few hundred per script call."""
        queues = [queue] if queue is not None else await self._names(self._queues_key)
        return await operations.purge(self._run, self.prefix, queues, statuses)

    # -- operations: one script each (see omniq_redis.operations and omniq_redis.workers) ----------

    async def list_page(self, query: TaskQuery) -> builtins.list[Task]:
        """A page of tasks, newest first, paged by key."""
        return await operations.list_page(self._run, self.prefix, query)

    async def queue_stats(self) -> builtins.list[QueueStats]:
        """Per queue: counts by status, the oldest ready task's age, completions per minute."""
        return await operations.queue_stats(self._run, self.prefix)

    async def retry(self, task_id: str) -> Task | None:
        """Run a FAILED, CANCELLED or EXPIRED task again, with a fresh attempt budget."""
        return await operations.retry(self._run, self.prefix, task_id)

    async def register_worker(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh a worker, expiring ``ttl`` seconds from now (server clock)."""
        await workers.register_worker(self._run, self.prefix, worker, ttl)

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker."""
        await workers.unregister_worker(self._run, self.prefix, worker_id)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """The live workers, oldest first."""
        return await workers.list_workers(self._run, self.prefix)
