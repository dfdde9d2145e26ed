"""The enqueue scripts' calls: what a task queue sends to store tasks, and which queues it registered.

Shared by the async enqueue and the blocking one (the sync API's), which
differ only in how the calls travel. A plain task (no unique key, eta,
pause, attempts, limits or dependencies) of a registered queue takes the
fast script (``lua_enqueue.ENQUEUE_ONE``); everything else the general one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from omniq.errors import BackendUnavailableError
from omniq_redis import keys
from omniq_redis._codec import enqueue_calls, enqueue_items, enqueue_one_args

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from omniq.models import Task

__all__ = ["Enqueues"]

#: tasks per enqueue script call (bounds how long one call blocks the server).
_ENQUEUE_CHUNK = 1000


class Enqueues:
    """The enqueue calls of one key prefix, and the queues this client has registered in QUEUES.

    Args:
        prefix: the key prefix.
        keys_of: the keys of a queue (validating its name), cached by the task queue.
    """

    def __init__(self, prefix: str, keys_of: Callable[[str], keys.QueueKeys]) -> None:
        self.prefix = prefix
        self._keys_of = keys_of
        self._index_key = keys.global_key(prefix, keys.INDEX)
        #: queues this client has registered in QUEUES (recover, purge, list and count read it):
        #: the enqueue script adds a queue when asked, on the first enqueue to it and again after a
        #: connection error (the server may have restarted without its data)
        self.registered: set[str] = set()

    def plain(self, task: Task) -> tuple[list[Any], tuple[str, ...]] | None:
        """The fast script's ARGV and KEYS for the common case, else None.

        A taken id (rare: the core's ids are fresh) makes the fast script
        answer 0 and goes on to the general script, which replaces a
        finished task; dependencies take the general script too (it counts them).
        """
        qk = self._keys_of(task.queue)  # validates the queue name
        if task.queue not in self.registered or (
            task.unique_key or task.eta or task.paused or task.attempts or task.limits or task.depends_on
        ):
            return None
        return enqueue_one_args(task), (self._index_key, qk.task(task.id), qk.pending, qk.ready, qk.signal)

    def general_args(self, task: Task) -> list[Any]:
        """The general script's ARGV for one task (registering its queue if need be)."""
        return [self.prefix, task.queue, enqueue_items([task]), "0" if task.queue in self.registered else "1"]

    def stored(self, task: Task, reply: list[bytes]) -> str:
        """The id the general script answered for one task."""
        self.registered.add(task.queue)
        return reply[0].decode()

    def calls(self, tasks: Sequence[Task]) -> tuple[list[tuple[str, list[Any]]], list[list[int]]]:
        """The general script's calls storing a batch, and which tasks each carries (see ``enqueue_calls``)."""
        for task in tasks:
            self._keys_of(task.queue)  # validates the queue name
        return enqueue_calls(self.prefix, tasks, self.registered, _ENQUEUE_CHUNK)

    def stored_many(self, tasks: Sequence[Task], order: list[list[int]], replies: list[Any]) -> list[str]:
        """The ids the calls of a batch answered, in the batch's order."""
        self.registered.update(task.queue for task in tasks)
        ids: list[str] = [""] * len(tasks)
        for chunk, reply in zip(order, replies, strict=True):
            for index, task_id in zip(chunk, reply, strict=True):
                ids[index] = task_id.decode()
        return ids

    @contextmanager
    def registering(self) -> Iterator[None]:
        """Forget which queues are registered when the server may be gone (it may come back empty)."""
        try:
            yield
        except BackendUnavailableError:
            self.registered.clear()
            raise
