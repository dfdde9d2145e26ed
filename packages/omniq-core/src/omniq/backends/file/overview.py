"""What an operator looks at: pages of tasks and per-queue statistics (synchronous).

Both are scans: the folders hold no index by ``created_at`` or ``finished_at``.
A page reads every task body its status and queue filters leave (a status
filter skips the other folders, a queue filter the other pending folders);
the statistics read the bodies of paused, running and terminal tasks and take
the ready ones from the pending file names alone (a name holds the ready
time), so a deep backlog costs one listing, not one read per task. A task
waiting for dependencies counts as PENDING but is not ready: it has no age.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.backends.file import layout
from omniq.models import TaskStatus, utcnow
from omniq.monitoring import QueueStats, empty_stats, select_page, stats_of

if TYPE_CHECKING:
    from omniq.backends.file.task_files import TaskFiles
    from omniq.models import Task
    from omniq.monitoring import TaskQuery

__all__ = ["list_page", "queue_stats"]


def list_page(files: TaskFiles, query: TaskQuery) -> list[Task]:
    """``query``'s page: the tasks its status and queue select, filtered, ordered and cut by the cursor."""
    return select_page(list(files.scan(query.status, query.queue)), query)


def queue_stats(files: TaskFiles) -> list[QueueStats]:
    """:class:`QueueStats` of every queue holding tasks, sorted by name."""
    now = utcnow()
    bodies: list[Task] = []  # paused, running and terminal tasks (a corrupted field still counts)
    ready_times: dict[str, list[str]] = {}  # pending folder name -> ready times of its tasks
    waiting: list[str] = []  # the queue of each task waiting for dependencies
    for folder, paths in files.all_paths():
        for path in paths:
            if folder == layout.PENDING_DIR:
                qdir, _, name = path.removeprefix(f"{folder}/").partition("/")
                parsed = layout.parse_pending(name)
                if parsed is not None:
                    ready_times.setdefault(qdir, []).append(parsed[0])
            elif (found := files.read(path, folder, salvage=True)) is not None:
                if folder == layout.WAITING_DIR:
                    waiting.append(found.task.queue)
                else:
                    bodies.append(found.task)
    stats = {entry.queue: entry for entry in stats_of(bodies, now)}
    for queue in waiting:
        entry = stats.get(queue)
        if entry is None:
            entry = stats[queue] = empty_stats(queue)
        entry.counts[TaskStatus.PENDING.value] += 1
    now_micros = int(layout.micros(now))
    for qdir, times in ready_times.items():
        queue = layout.queue_of(qdir)
        entry = stats.get(queue)
        if entry is None:
            entry = stats[queue] = empty_stats(queue)
        entry.counts[TaskStatus.PENDING.value] += len(times)
        oldest = int(min(times))
        if oldest <= now_micros:
            entry.oldest_ready_age = (now_micros - oldest) / 1e6
    return sorted(stats.values(), key=lambda entry: entry.queue)
