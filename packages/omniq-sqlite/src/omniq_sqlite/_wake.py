"""Wake-up hints: in-process events, and Unix datagrams between processes on one host.

SQLite has no LISTEN/NOTIFY, so each process that waits binds one Unix
datagram socket per channel in a directory beside the database
(``<db>.wake/``): ``w-*`` sockets wait for work, ``r-*`` sockets for results.
After a commit, the writer sends a tiny datagram to every socket of the
channel; a listener thread in the receiving process turns it into
:class:`anyio.Event` sets on the waiting tasks' loops. Sockets of dead
processes refuse datagrams and are removed by the first sender that notices.

Hints may be lost (a full socket buffer, a process that starts waiting
mid-commit); every waiter re-checks the database after registering and
falls back to a slow poll, so a lost hint costs latency, never a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import threading
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["RESULTS", "WORK", "WakeHub", "Waiter", "wake_dir"]

logger = logging.getLogger("omniq.sqlite")

#: channel of "a task may be ready" hints.
WORK = "w"
#: channel of "these results were stored" hints (payload: comma-separated task ids).
RESULTS = "r"
#: suffix of the hint directory created beside the database file.
WAKE_DIR_SUFFIX = ".wake"
#: results hints longer than this wake every result waiter instead of naming ids.
_MAX_PAYLOAD = 60_000
#: AF_UNIX paths are limited to 108 bytes (with the NUL); past this we use a short directory in the temp dir.
_MAX_SOCKET_PATH = 107
#: room for "/w-<pid>-<8 hex>.sock".
_SOCKET_NAME_ROOM = 32
_STOP = b"\x00stop"


def wake_dir(db_path: str) -> str:
    """The hint directory of a database: ``<db>.wake``, or a short temp dir when that path is too long."""
    preferred = db_path + WAKE_DIR_SUFFIX
    if len(os.fsencode(preferred)) + _SOCKET_NAME_ROOM <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(os.fsencode(db_path)).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"omniq-wake-{digest}")


class Waiter:
    """One waiting task: an event that may be set from any thread."""

    __slots__ = ("_loop", "_thread", "event", "key")

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.event = anyio.Event()
        self._thread = threading.get_ident()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # another async library: only same-thread wake-ups, the poll covers the rest
            self._loop = None

    def reset(self) -> None:
        """Arm a fresh event (call before re-checking the database)."""
        self.event = anyio.Event()

    def _set(self) -> None:
        self.event.set()

    def wake(self) -> None:
        """Set the event, from the waiter's own thread or any other."""
        if threading.get_ident() == self._thread:
            self._set()
        elif self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
                self._loop.call_soon_threadsafe(self._set)


class _Channel:
    """The socket, listener thread and local waiters of one channel in one process."""

    def __init__(self, hub: WakeHub, kind: str) -> None:
        self.hub = hub
        self.kind = kind
        self.any: set[Waiter] = set()
        self.by_key: dict[str, set[Waiter]] = {}
        self.sock: socket.socket | None = None
        self.name: str | None = None
        self.thread: threading.Thread | None = None

    def listen(self) -> None:
        if self.sock is not None:
            return
        os.makedirs(self.hub.directory, exist_ok=True)
        name = f"{self.kind}-{os.getpid()}-{os.urandom(4).hex()}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(os.path.join(self.hub.directory, name))
        except OSError:
            sock.close()
            raise
        self.sock, self.name = sock, name
        self.thread = threading.Thread(target=self._run, name=f"omniq-sqlite-wake-{self.kind}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sock = self.sock
        assert sock is not None
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if data == _STOP:
                return
            keys = data.decode().split(",") if data else None
            self.hub.notify_local(self.kind, keys)

    def stop(self) -> None:
        sock, name = self.sock, self.name
        if sock is None or name is None:
            return
        path = os.path.join(self.hub.directory, name)
        with contextlib.suppress(OSError):
            sock.sendto(_STOP, path)
        if self.thread is not None:
            self.thread.join(timeout=1.0)
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        self.sock = self.name = self.thread = None


class WakeHub:
    """All wake-up machinery of one database file in this process."""

    def __init__(self, db_path: str, *, cross_process: bool = True) -> None:
        self.directory = wake_dir(db_path)
        self.cross_process = cross_process
        self._lock = threading.Lock()
        self._channels = {WORK: _Channel(self, WORK), RESULTS: _Channel(self, RESULTS)}
        self._sender: socket.socket | None = None

    # -- waiting side ----------------------------------------------------------------------------

    def add_waiter(self, kind: str, key: str | None = None) -> Waiter:
        """Register a waiter (and start listening for other processes' hints on first use)."""
        channel = self._channels[kind]
        waiter = Waiter(key)
        with self._lock:
            if self.cross_process and channel.sock is None:
                try:
                    channel.listen()
                except OSError as exc:  # e.g. a read-only directory: fall back to polling
                    logger.warning("cannot listen for SQLite wake-up hints in %s (%s); polling", self.directory, exc)
                    self.cross_process = False
            if key is None:
                channel.any.add(waiter)
            else:
                channel.by_key.setdefault(key, set()).add(waiter)
        return waiter

    def remove_waiter(self, kind: str, waiter: Waiter) -> None:
        """Forget a waiter."""
        channel = self._channels[kind]
        with self._lock:
            if waiter.key is None:
                channel.any.discard(waiter)
            else:
                waiters = channel.by_key.get(waiter.key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del channel.by_key[waiter.key]

    # -- notifying side --------------------------------------------------------------------------

    def notify_local(self, kind: str, keys: Iterable[str] | None = None) -> None:
        """Wake this process's waiters of ``kind`` (only those of ``keys`` when given)."""
        channel = self._channels[kind]
        with self._lock:
            if keys is None:
                targets = list(channel.any)
                for waiters in channel.by_key.values():
                    targets.extend(waiters)
            else:
                targets = list(channel.any)
                for key in keys:
                    targets.extend(channel.by_key.get(key, ()))
        for waiter in targets:
            waiter.wake()

    def send_remote(self, kind: str, keys: list[str] | None = None) -> None:
        """Send a hint to every other process waiting on ``kind`` (all its waiters, or those of ``keys``)."""
        if not self.cross_process:
            return
        payload = b""
        if keys is not None:
            payload = ",".join(keys).encode()
            if len(payload) > _MAX_PAYLOAD:
                payload = b""
        self._broadcast(kind, payload)

    def _broadcast(self, kind: str, payload: bytes) -> None:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        own = self._channels[kind].name
        prefix = kind + "-"
        sender = None
        for name in names:
            if not name.startswith(prefix) or name == own:
                continue
            if sender is None:
                sender = self._get_sender()
            path = os.path.join(self.directory, name)
            try:
                sender.sendto(payload, path)
            except (ConnectionRefusedError, FileNotFoundError):
                # Nobody is bound there any more: the process died without cleaning up.
                with contextlib.suppress(OSError):
                    os.unlink(path)
            except OSError:
                pass  # a full buffer means the listener already has a wake-up pending

    def _get_sender(self) -> socket.socket:
        with self._lock:
            if self._sender is None:
                sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sender.setblocking(False)
                self._sender = sender
            return self._sender

    def close(self) -> None:
        """Stop listening, remove this process's sockets and wake every local waiter."""
        for channel in self._channels.values():
            channel.stop()
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
        for kind in self._channels:
            self.notify_local(kind)
