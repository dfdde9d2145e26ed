"""Commands on tasks: ``status``, ``tasks``, ``inspect``, ``cancel``, ``purge``."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

import anyio.to_thread

from omniq.app import AsyncOmniQ
from omniq.cli.apps import app_from, places
from omniq.cli.output import emit, emit_json, shown, table
from omniq.errors import OmniQError
from omniq.models import Task, TaskStatus
from omniq.monitoring import page_cursor
from omniq.progress import describe_progress

__all__ = ["register"]

_STATUSES = [status.value for status in TaskStatus]


def _with_app(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    command.add_argument("--app", default=None, help="module:attribute of the app (default: from environment)")
    return command


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the task commands to the command's subparsers."""
    text = "count tasks by status (and name the backend and place read)"
    status = _with_app(sub.add_parser("status", help=text, description=text))
    status.add_argument("--queue", default=None)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)

    text = "list tasks, newest first"
    tasks = _with_app(sub.add_parser("tasks", help=text, description=text))
    tasks.add_argument("--status", default=None, choices=_STATUSES)
    tasks.add_argument("--queue", default=None)
    tasks.add_argument("--name", default=None, help="only tasks of this registered name")
    tasks.add_argument("--limit", type=int, default=25, help="at most this many (default 25)")
    tasks.add_argument("--since", type=_when, default=None, help="created at or after (ISO time; naive is local)")
    tasks.add_argument("--until", type=_when, default=None, help="created before (ISO time; naive is local)")
    tasks.add_argument("--after", default=None, metavar="CURSOR", help="the next page: the cursor a page ends with")
    tasks.add_argument("--json", action="store_true", help="print JSON")
    tasks.set_defaults(handler=_tasks)

    text = "show one task: arguments, result or error with traceback, options, events"
    inspect = _with_app(sub.add_parser("inspect", help=text, description=text))
    inspect.add_argument("task_id")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=_inspect)

    text = "cancel pending or running tasks"
    cancel = _with_app(sub.add_parser("cancel", help=text, description=text))
    cancel.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    cancel.set_defaults(handler=_cancel)

    text = "delete tasks; asks for confirmation on a terminal, needs --yes otherwise"
    purge = _with_app(sub.add_parser("purge", help=text, description=text))
    purge.add_argument("--queue", default=None)
    purge.add_argument("--status", action="append", default=None, choices=_STATUSES)
    purge.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation (required when stdin is not a terminal)"
    )
    purge.set_defaults(handler=_purge)


async def _status(args: argparse.Namespace) -> int:
    async with app_from(args.app) as app:
        counts = {status.value: await app.count_tasks(status, queue=args.queue) for status in TaskStatus}
        if args.json:
            emit_json({"places": places(app), "queue": args.queue, "counts": counts})
            return 0
        for line in places(app):
            emit(line)
        emit(f"{'status':<10} {'tasks':>8}")
        for status, count in counts.items():
            emit(f"{status:<10} {count:>8}")
    return 0


def _when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None


async def _matching(app: AsyncOmniQ, args: argparse.Namespace) -> list[Task]:
    """Up to ``--limit`` tasks with the filters, newest first; a page by key (``list_tasks(after=...)``)."""
    if args.limit < 1:
        raise OmniQError(f"--limit must be at least 1, not {args.limit}")
    filters = {"name": args.name, "since": args.since, "until": args.until, "after": args.after}
    return await app.list_tasks(args.status, args.limit, queue=args.queue, **filters)


def _summary(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "name": task.func,
        "queue": task.queue,
        "status": task.status.value,
        "attempts": task.attempts,
        "max_retries": task.max_retries,
        "priority": task.priority,
        "created_at": task.created_at,
        "eta": task.eta,
        "finished_at": task.finished_at,
        "error": None if task.error is None else f"{task.error.type}: {task.error.message}",
        "cursor": page_cursor(task.created_at, task.id),
    }


async def _tasks(args: argparse.Namespace) -> int:
    async with app_from(args.app) as app:
        tasks = await _matching(app, args)
    if args.json:
        emit_json([_summary(task) for task in tasks])
        return 0
    rows = [
        (t.id, t.func, t.queue, t.status, f"{t.attempts}/{t.max_retries + 1}", t.created_at, _error_line(t))
        for t in tasks
    ]
    table(("id", "name", "queue", "status", "attempts", "created", "error"), rows)
    if len(tasks) == args.limit:
        print(f"next page: --after {page_cursor(tasks[-1].created_at, tasks[-1].id)}", file=sys.stderr)  # noqa: T201
    return 0


def _error_line(task: Task) -> str:
    if task.error is None:
        return "-"
    text = f"{task.error.type}: {task.error.message}".splitlines()[0] if task.error.message else task.error.type
    return text if len(text) <= 60 else text[:57] + "..."


def _arguments(app: AsyncOmniQ, task: Task) -> dict[str, Any]:
    try:
        args, kwargs = app.decode_args(task)
    except OmniQError as exc:
        return {"undecodable": str(exc)}
    return {"args": list(args), "kwargs": kwargs}


async def _inspect(args: argparse.Namespace) -> int:
    async with app_from(args.app) as app:
        task = await app.get_task(args.task_id)
        if task is None:
            print(f"no task {args.task_id}", file=sys.stderr)  # noqa: T201 - CLI output
            return 1
        result = await app.result_storage.get(task.id)
        value: Any = None
        if result is not None and result.payload:
            try:
                value = app.serializer.loads(result.payload)
            except OmniQError as exc:
                value = f"<undecodable: {exc}>"
        events = await app.get_events(task.id)
        arguments = _arguments(app, task)
    details = {
        **_summary(task),
        "arguments": arguments,
        "unique_key": task.unique_key,
        "depends_on": list(task.depends_on),
        "waiting": task.waiting,
        "workflow_id": task.workflow_id,
        "timeout": task.timeout,
        "expires_at": task.expires_at,
        "result_ttl": task.result_ttl,
        "interval": task.interval,
        "cron": task.cron,
        "paused": task.paused,
        "started_at": task.started_at,
        "updated_at": task.updated_at,
        "worker_id": task.worker_id,
        "progress": describe_progress(task.progress),
        "headers": task.headers,
        "result": value,
        "traceback": task.error.traceback if task.error is not None else None,
        "events": [
            {"at": e.timestamp, "type": e.type.value, "attempt": e.attempt, "message": e.message} for e in events
        ],
    }
    if args.json:
        emit_json(details)
        return 0
    for key, item in details.items():
        if key in ("events", "traceback", "arguments"):
            continue
        emit(f"{key:<12} {shown(item)}")
    emit(f"{'arguments':<12} {_call(arguments)}")
    if details["traceback"]:
        emit("traceback:")
        emit(str(details["traceback"]).rstrip())
    if events:
        emit("events:")
    for event in events:
        emit(f"  {event.timestamp.isoformat()} {event.type.value:<10} attempt={event.attempt} {event.message}")
    return 0


def _call(arguments: dict[str, Any]) -> str:
    if "undecodable" in arguments:
        return f"<undecodable: {arguments['undecodable']}>"
    parts = [repr(a) for a in arguments["args"]] + [f"{k}={v!r}" for k, v in arguments["kwargs"].items()]
    return f"({', '.join(parts)})"


async def _cancel(args: argparse.Namespace) -> int:
    code = 0
    async with app_from(args.app) as app:
        for task_id in args.task_ids:
            if await app.cancel(task_id):
                emit(f"cancelled {task_id}")
            else:
                print(f"not cancelled {task_id}: unknown or already finished", file=sys.stderr)  # noqa: T201
                code = 1
    return code


async def _purge(args: argparse.Namespace) -> int:
    if not args.yes and not sys.stdin.isatty():
        print("refusing to purge without --yes: stdin is not a terminal to confirm on", file=sys.stderr)  # noqa: T201
        return 2
    async with app_from(args.app) as app:
        if not args.yes and not await _confirm_purge(app, args):
            emit("nothing purged")
            return 1
        count = await app.purge(queue=args.queue, statuses=args.status)
    emit(f"purged {count} task(s)")
    return 0


async def _confirm_purge(app: AsyncOmniQ, args: argparse.Namespace) -> bool:
    """Ask on the terminal; True only for an explicit yes."""
    statuses = args.status or [None]
    count = sum([await app.count_tasks(status, queue=args.queue) for status in statuses])
    scope = [f"queue {args.queue}"] if args.queue else []
    scope += [f"status {', '.join(args.status)}"] if args.status else []
    what = f"{count} task(s)" + (f" ({'; '.join(scope)})" if scope else ", with all results and events")
    question = f"delete {what} from {'; '.join(places(app))}? [y/N] "
    try:
        answer = await anyio.to_thread.run_sync(input, question)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
