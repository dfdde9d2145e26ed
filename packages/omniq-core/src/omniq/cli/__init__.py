"""The ``omniq`` command: run workers and look at the queue.

    omniq --version
    omniq worker APP [--concurrency N] [--queues a,b] [--pool async|thread|process] [--burst] [--processes N|auto]
    omniq backends [--json]
    omniq status [--queue Q] [--json]
    omniq tasks [--status S] [--queue Q] [--name N] [--since T] [--until T] [--limit K] [--after CURSOR] [--json]
    omniq inspect TASK_ID [--json]
    omniq cancel TASK_ID...
    omniq retry TASK_ID... | omniq retry --all-failed [--queue Q]
    omniq workers [--json]
    omniq queues [--json] | omniq queues pause|resume QUEUE
    omniq schedules [--json] | omniq schedules pause|resume|cancel SCHEDULE_ID
    omniq purge [--queue Q] [--status S] [--yes]
    omniq dashboard [APP] [--host H] [--port P] [--auth USER:PASSWORD] [--read-only]

Every command but ``worker`` and ``backends`` takes ``--app APP``; without it
the app is built from the environment. ``status`` and ``purge`` name the
backend and the place they read (a redacted URL or a file path), so that a
command run in the wrong directory or with the wrong settings is obvious.
``purge`` asks for confirmation on a terminal and refuses without ``--yes``
when stdin is not one.

``APP`` is ``module:attribute`` or ``module.attribute`` naming an OmniQ or
AsyncOmniQ instance, or a callable (factory) returning one.

``--json`` prints one JSON document for programs. ``omniq tasks`` pages by
key: a full page ends with the ``--after`` cursor of the next one (in JSON,
each task's ``cursor``). Long runs (``retry --all-failed``) show a progress
bar on a terminal when rich is installed, and plain lines otherwise.

One module per group of commands: :mod:`~omniq.cli.worker`,
:mod:`~omniq.cli.tasks`, :mod:`~omniq.cli.operations` (retry, workers,
queues), :mod:`~omniq.cli.schedules`, :mod:`~omniq.cli.backends`; each adds
its parsers and names its handler.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Sequence

from omniq.cli import backends, dashboard, operations, schedules, tasks, worker
from omniq.cli.apps import load_app
from omniq.errors import OmniQError

__all__ = ["load_app", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omniq", description="OmniQ task queue")
    parser.add_argument("--version", action=backends.VersionAction)
    parser.add_argument("--log-level", default=None, help=_LOG_LEVEL_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (worker, backends, tasks, operations, schedules, dashboard):
        group.register(sub)
    _log_level_everywhere(parser)
    return parser


_LOG_LEVEL_HELP = "DEBUG, INFO, WARNING (default: $OMNIQ_LOG_LEVEL or INFO)"


def _log_level_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``--log-level`` after any command too (``omniq worker APP --log-level INFO``), not only before it.

    A command's own copy has no default, so it never overwrites one given before the command.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):  # aliases share a parser
                if "--log-level" not in command._option_string_actions:
                    command.add_argument("--log-level", default=argparse.SUPPRESS, help=_LOG_LEVEL_HELP)
                _log_level_everywhere(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omniq`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    from omniq import logs as omniq_logs

    try:
        omniq_logs.configure(args.log_level or os.environ.get("OMNIQ_LOG_LEVEL") or "INFO")
        if inspect.iscoroutinefunction(args.handler):
            import anyio

            return int(anyio.run(args.handler, args))
        return int(args.handler(args))
    except OmniQError as exc:
        print(f"omniq: error: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`omniq status | head`): no traceback; the rest of the output goes nowhere
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # as a shell reports a process ended by SIGPIPE
