"""Result files over a :class:`~.store.Store` (synchronous): one file per task, replaced atomically."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.backends.file import layout
from omniq.errors import SerializationError
from omniq.models import TaskResult, decode_result, encode_result, utcnow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.backends.file.store import Store

__all__ = ["ResultFiles"]


class ResultFiles:
    """Synchronous result-storage operations on one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, result: TaskResult) -> None:
        """Store (or replace) one result; the caller flushes."""
        self.store.write(layout.result_file(result.task_id), encode_result(result))

    def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results durably."""
        for result in results:
            self.write(result)
        self.store.flush()

    def get(self, task_id: str) -> TaskResult | None:
        """The live result, or None (an expired one is deleted on sight).

        Raises:
            SerializationError: the stored file is corrupted (it is kept for inspection).
        """
        path = layout.result_file(task_id)
        data = self.store.read(path)
        if data is None:
            return None
        try:
            result = decode_result(data)
        except SerializationError as exc:
            raise SerializationError(f"the result file {path} is corrupted: {exc}") from exc
        if result.expires_at is not None and result.expires_at <= utcnow():
            self.store.unlink(path)
            return None
        return result

    def delete(self, task_id: str) -> bool:
        """Delete a result; True if a live one was there."""
        try:
            live = self.get(task_id) is not None
        except SerializationError:
            live = True
        return self.store.unlink(layout.result_file(task_id)) and live

    def purge(self, expired_only: bool) -> int:
        """Delete expired results (or all); return how many."""
        now = utcnow()
        count = 0
        for name in self.store.listdir(layout.RESULTS_DIR):
            if not name.endswith(layout.RESULT_SUFFIX):
                continue
            path = f"{layout.RESULTS_DIR}/{name}"
            if expired_only:
                data = self.store.read(path)
                if data is None:
                    continue
                try:
                    expires_at = decode_result(data).expires_at
                except SerializationError:
                    continue  # corrupted: kept for inspection, reported by get()
                if expires_at is None or expires_at > now:
                    continue
            count += self.store.unlink(path)
        self.store.flush()
        return count
