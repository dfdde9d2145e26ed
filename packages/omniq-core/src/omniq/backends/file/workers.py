"""The worker registry in files: ``workers/<id>.worker``, its expiry inside (synchronous).

Every process on the root sees every worker. A file holds the worker and
the wall-clock time it expires at (the host's clock is the engine's: one
root, one host); a reader skips an expired entry and deletes it under the
registry's lock, after reading it again, so a heartbeat that refreshed it
meanwhile is never lost.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from omniq.backends.file import layout
from omniq.monitoring import WorkerInfo

if TYPE_CHECKING:
    from omniq.backends.file.store import Store

__all__ = ["list_workers", "register_worker", "unregister_worker"]


class _Entry(msgspec.Struct, array_like=True):
    """A worker file's body: the worker and when it expires (seconds since the epoch)."""

    worker: WorkerInfo
    expires_at: float


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Entry).decode


def register_worker(store: Store, worker: WorkerInfo, ttl: float) -> None:
    """Store or refresh ``worker`` until ``ttl`` seconds from now."""
    body = _encode(_Entry(worker, time.time() + ttl))
    with store.lock(layout.WORKERS_LOCK):
        store.write(layout.worker_file(worker.id), body)


def unregister_worker(store: Store, worker_id: str) -> None:
    """Remove a worker's file; an unknown id is ignored."""
    with store.lock(layout.WORKERS_LOCK):
        store.unlink(layout.worker_file(worker_id))


def list_workers(store: Store) -> list[WorkerInfo]:
    """The workers whose entry has not expired, oldest ``started_at`` first; expired files are removed."""
    now = time.time()
    live: list[WorkerInfo] = []
    expired: list[str] = []
    for name in store.listdir(layout.WORKERS_DIR):
        if not name.endswith(layout.WORKER_SUFFIX):
            continue  # temp debris
        path = f"{layout.WORKERS_DIR}/{name}"
        entry = _read(store, path)
        if entry is None:
            continue
        if entry.expires_at > now:
            live.append(entry.worker)
        else:
            expired.append(path)
    if expired:
        with store.lock(layout.WORKERS_LOCK):
            for path in expired:
                entry = _read(store, path)
                if entry is not None and entry.expires_at <= now:
                    store.unlink(path)
    return sorted(live, key=lambda worker: worker.started_at)


def _read(store: Store, path: str) -> _Entry | None:
    """The entry in ``path``; None when it is gone or not an entry (a corrupted file is skipped)."""
    data = store.read(path)
    if data is None:
        return None
    try:
        return _decode(data)
    except msgspec.DecodeError:
        return None
