"""``omniq schedules``: recurring tasks, and pausing, resuming or ending one."""

from __future__ import annotations

import argparse
import sys

from omniq.app import AsyncOmniQ
from omniq.cli.apps import app_from
from omniq.cli.output import emit, emit_json, table
from omniq.models import TaskStatus
from omniq.scheduling import Schedule

__all__ = ["register"]

_ACTIONS = {
    "pause": ("pause_schedule", "paused"),
    "resume": ("resume_schedule", "resumed"),
    "cancel": ("cancel_schedule", "cancelled"),
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``schedules`` (with its actions) to the command's subparsers."""
    text = "list recurring tasks (interval or cron); pause, resume or cancel one"
    command = sub.add_parser("schedules", help=text, description=text)
    command.add_argument("--app", default=None, help="module:attribute of the app (default: from environment)")
    command.add_argument("--json", action="store_true", help="print JSON")
    command.add_argument("action", nargs="?", choices=sorted(_ACTIONS), help="what to do with SCHEDULE_ID")
    command.add_argument("schedule_id", nargs="?", metavar="SCHEDULE_ID")
    command.set_defaults(handler=_schedules)


async def recurring(app: AsyncOmniQ) -> list[Schedule]:
    """Every live recurring task as a schedule (pending or running), newest first."""
    found: list[Schedule] = []
    page = 500
    for status in (TaskStatus.PENDING, TaskStatus.RUNNING):
        offset = 0
        while True:
            batch = await app.list_tasks(status, page, offset=offset)
            found += [Schedule.from_task(task) for task in batch if task.recurring]
            if len(batch) < page:
                break
            offset += page
    return found


async def _schedules(args: argparse.Namespace) -> int:
    if args.action is not None and args.schedule_id is None:
        print(f"omniq schedules {args.action} needs a SCHEDULE_ID", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    async with app_from(args.app) as app:
        if args.action is not None:
            method, done = _ACTIONS[args.action]
            if await getattr(app, method)(args.schedule_id):
                emit(f"{done} {args.schedule_id}")
                return 0
            print(f"no live schedule {args.schedule_id}", file=sys.stderr)  # noqa: T201 - CLI output
            return 1
        schedules = await recurring(app)
    if args.json:
        emit_json(schedules)
        return 0
    rows = [
        (s.id, s.func, s.queue, s.cron or f"every {s.interval:g}s", "paused" if s.paused else "active", s.next_run_at)
        for s in schedules
    ]
    table(("id", "name", "queue", "when", "state", "next run"), rows)
    return 0
