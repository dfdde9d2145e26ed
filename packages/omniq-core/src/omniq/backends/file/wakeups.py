"""In-process wake-ups of the file backend: a writer wakes the waiters of its own thread at once.

Waiters on other threads and in other processes notice new work or a new
result by polling (every ``poll_interval`` seconds): files have no signal.
A write from a thread with no event loop (the sync API's blocking enqueue)
wakes this process's waiters on every thread, through their loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from omniq.backends.file.store import Store

__all__ = ["WORK", "Notifier", "result_channel"]

#: channel woken when a task may have become ready.
WORK = "work"


def result_channel(task_id: str) -> str:
    """The channel woken when ``task_id``'s result is written."""
    return f"result:{task_id}"


class Notifier:
    """In-process wake-ups on one root: ``wait_for_work`` and result waiters.

    A waiter is woken only from its own thread (its event loop); waiters on
    other threads and in other processes fall back to polling.
    """

    # Weak: the notifier of a root lives as long as some component on that root does.
    _by_key: weakref.WeakValueDictionary[str, Notifier] = weakref.WeakValueDictionary()
    _guard = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # channel -> (event, its thread, its asyncio loop: None under another async library)
        self._waiters: dict[str, set[tuple[anyio.Event, int, asyncio.AbstractEventLoop | None]]] = {}

    @classmethod
    def for_store(cls, store: Store) -> Notifier:
        """The notifier shared by every component on ``store``'s root."""
        with cls._guard:
            notifier = cls._by_key.get(store.key)
            if notifier is None:
                notifier = cls._by_key[store.key] = cls()
            return notifier

    @contextlib.contextmanager
    def watch(self, channel: str) -> Iterator[anyio.Event]:
        """Register an event set by :meth:`notify` on ``channel`` (from this thread)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        entry = (anyio.Event(), threading.get_ident(), loop)
        with self._lock:
            self._waiters.setdefault(channel, set()).add(entry)
        try:
            yield entry[0]
        finally:
            with self._lock:
                waiters = self._waiters.get(channel)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._waiters[channel]

    def notify(self, channels: Iterable[str]) -> None:
        """Wake this thread's waiters on ``channels``."""
        me = threading.get_ident()
        with self._lock:
            woken = [entry[0] for channel in channels for entry in self._waiters.get(channel, ()) if entry[1] == me]
        for event in woken:
            event.set()

    def notify_every_thread(self, channels: Iterable[str]) -> None:
        """Wake the waiters of every thread on ``channels``, from a thread with no event loop."""
        with self._lock:
            entries = [entry for channel in channels for entry in self._waiters.get(channel, ())]
        for event, _, loop in entries:
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(event.set)
