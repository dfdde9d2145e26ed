"""Operator commands: ``retry`` (one, several, or every failed task), ``workers``, ``queues`` (``pause|resume``)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

import msgspec

from omniq.app import AsyncOmniQ
from omniq.cli.apps import app_from
from omniq.cli.output import emit, emit_json, progress, shown, table
from omniq.models import TaskStatus, utcnow
from omniq.monitoring import TaskQuery, WorkerInfo, empty_stats, page_cursor

__all__ = ["failed_ids", "register"]

#: tasks read per page while collecting the failed ones.
_PAGE = 500


def _command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str) -> argparse.ArgumentParser:
    command = sub.add_parser(name, help=text, description=text)
    command.add_argument("--app", default=None, help="module:attribute of the app (default: from environment)")
    return command


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``retry``, ``workers`` and ``queues`` to the command's subparsers."""
    retry = _command(sub, "retry", "run FAILED, CANCELLED or EXPIRED tasks again, with a fresh attempt budget")
    retry.add_argument("task_ids", nargs="*", metavar="TASK_ID")
    retry.add_argument("--all-failed", action="store_true", help="retry every FAILED task (of --queue)")
    retry.add_argument("--queue", default=None, help="with --all-failed: only this queue's")
    retry.set_defaults(handler=_retry)

    workers = _command(sub, "workers", "list live worker processes (their registry entries)")
    workers.add_argument("--json", action="store_true", help="print JSON")
    workers.set_defaults(handler=_workers)

    queues = _command(
        sub,
        "queues",
        "per queue: tasks by status, oldest ready age, completed in the last hour, paused; pause or resume one",
    )
    queues.add_argument("--json", action="store_true", help="print JSON")
    queues.add_argument("action", nargs="?", choices=("pause", "resume"), help="what to do with QUEUE")
    queues.add_argument("queue", nargs="?", metavar="QUEUE")
    queues.set_defaults(handler=_queues)


async def failed_ids(app: AsyncOmniQ, queue: str | None) -> list[str]:
    """Every FAILED task's id (of ``queue``), newest first, read page by page by key."""
    found: list[str] = []
    after: str | None = None
    while True:
        query = TaskQuery(status=TaskStatus.FAILED, queue=queue, limit=_PAGE, after=after)
        page = await app.task_queue.list_page(query)
        found += [task.id for task in page]
        if len(page) < _PAGE:
            return found
        after = page_cursor(page[-1].created_at, page[-1].id)


async def _retry(args: argparse.Namespace) -> int:
    if bool(args.task_ids) == args.all_failed:
        print("omniq retry needs TASK_ID... or --all-failed (not both)", file=sys.stderr)  # noqa: T201
        return 2
    if args.queue is not None and not args.all_failed:
        print("omniq retry: --queue goes with --all-failed", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    refused: list[str] = []
    async with app_from(args.app) as app:
        ids = list(args.task_ids) if args.task_ids else await failed_ids(app, args.queue)
        many = args.all_failed or len(ids) > 1
        for task_id in progress(ids, "retrying") if many else ids:
            if await app.retry(task_id):
                if not many:
                    emit(f"retried {task_id}")
            else:
                refused.append(task_id)
    why = "unknown, not failed/cancelled/expired, or its unique key is held by a live task"
    for task_id in refused:
        print(f"not retried {task_id}: {why}", file=sys.stderr)  # noqa: T201 - CLI output
    if many:
        emit(f"retried {len(ids) - len(refused)} of {len(ids)} task(s)")
    return 1 if refused and args.task_ids else 0


def _worker_row(worker: WorkerInfo, now: datetime) -> dict[str, Any]:
    return {
        "id": worker.id,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "queues": list(worker.queues),
        "pool": worker.pool,
        "concurrency": worker.concurrency,
        "version": worker.version,
        "started_at": worker.started_at,
        "heartbeat_at": worker.heartbeat_at,
        "heartbeat_age": round((now - worker.heartbeat_at).total_seconds(), 3),
        "in_flight": worker.in_flight,
        "processed": worker.processed,
        "failed": worker.failed,
    }


async def _workers(args: argparse.Namespace) -> int:
    async with app_from(args.app) as app:
        workers = await app.list_workers()
        shared = app.shared_worker_registry
        kind = type(app.task_queue).__name__
        now = utcnow()
    if not shared:
        # this command is a process of its own: a registry that is not shared shows none of the workers
        print(  # noqa: T201 - CLI output
            f"note: {kind} keeps no shared worker registry; only workers in this process would be listed",
            file=sys.stderr,
        )
    rows = [_worker_row(worker, now) for worker in workers]
    if args.json:
        emit_json(rows)
        return 0
    table(
        ("id", "host", "pid", "queues", "pool", "conc", "version", "started", "heartbeat", "in flight", "done/failed"),
        [
            (
                r["id"],
                r["hostname"],
                r["pid"],
                ",".join(r["queues"]),
                r["pool"],
                r["concurrency"],
                r["version"],
                r["started_at"],
                f"{r['heartbeat_age']:.1f}s ago",
                r["in_flight"],
                f"{r['processed']}/{r['failed']}",
            )
            for r in rows
        ],
    )
    return 0


async def _queues(args: argparse.Namespace) -> int:
    if args.action is not None and args.queue is None:
        print(f"omniq queues {args.action} needs a QUEUE", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    async with app_from(args.app) as app:
        if args.action is not None:
            await (app.pause_queue if args.action == "pause" else app.resume_queue)(args.queue)
            emit(f"{args.action}d {args.queue}")
            return 0
        stats = await app.queue_stats()
        paused = set(await app.paused_queues())
    # A paused queue without tasks is listed too: pausing it was an operator's act.
    stats += [empty_stats(name) for name in sorted(paused - {entry.queue for entry in stats})]
    if args.json:
        emit_json(
            [
                {
                    **msgspec.structs.asdict(entry),
                    "completed_last_hour": sum(entry.completed_per_minute),
                    "paused": entry.queue in paused,
                }
                for entry in stats
            ]
        )
        return 0
    statuses = [status.value for status in TaskStatus]
    table(
        ("queue", *statuses, "oldest ready", "done/hour", "paused"),
        [
            (
                entry.queue,
                *(entry.counts.get(status, 0) for status in statuses),
                _age(entry.oldest_ready_age),
                sum(entry.completed_per_minute),
                "yes" if entry.queue in paused else "no",
            )
            for entry in stats
        ],
    )
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return shown(None)
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
