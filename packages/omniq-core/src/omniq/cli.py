"""The ``omniq`` command: run workers and look at the queue.

    omniq --version
    omniq worker app:omniq [--concurrency N] [--queues a,b] [--pool async|thread|process] [--burst]
    omniq backends
    omniq status [--app app:omniq]
    omniq inspect TASK_ID [--app app:omniq]
    omniq purge [--queue Q] [--status S] [--yes] [--app app:omniq]

``status`` and ``purge`` name the backend and the place they read (a redacted
URL or a file path), so that a command run in the wrong directory or with the
wrong settings is obvious. ``purge`` asks for confirmation on a terminal and
refuses without ``--yes`` when stdin is not one.

``APP`` is ``module:attribute`` or ``module.attribute`` naming an OmniQ or
AsyncOmniQ instance, or a callable (factory) returning one. Without
``--app``, the inspection commands build an app from the environment.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.to_thread

from omniq.app import AsyncOmniQ
from omniq.config import COMPONENTS
from omniq.errors import ConfigurationError, OmniQError, redact_url
from omniq.models import TaskStatus

__all__ = ["load_app", "main"]


def load_app(spec: str) -> AsyncOmniQ:
    """Import ``module:attr`` / ``module.attr`` and return the AsyncOmniQ behind it.

    Raises:
        OmniQError: the module or attribute cannot be found, or is not an app.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise OmniQError(f"cannot load app {spec!r}: expected 'module:attribute' or 'module.attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OmniQError(f"cannot load app {spec!r}: {exc}") from exc
    try:
        target: Any = getattr(module, attr)
    except AttributeError as exc:
        raise OmniQError(f"cannot load app {spec!r}: module {module_name!r} has no attribute {attr!r}") from exc
    from omniq.sync import OmniQ

    if not isinstance(target, (AsyncOmniQ, OmniQ)) and callable(target):
        target = target()
    if isinstance(target, OmniQ):
        return target.async_app
    if isinstance(target, AsyncOmniQ):
        return target
    raise OmniQError(f"cannot load app {spec!r}: {type(target).__name__} is not an OmniQ or AsyncOmniQ")


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def versions() -> list[tuple[str, str]]:
    """(distribution, version) of omniq-core and of every installed backend distribution."""
    from omniq.plugins import installed_backends

    names = ["omniq-core", *sorted({spec.distribution for _, spec in installed_backends()} - {"omniq-core"})]
    return [(name, _version(name)) for name in names]


class _VersionAction(argparse.Action):
    """``--version``: the versions are looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions of omniq-core and the backends")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print("\n".join(f"{name} {ver}" for name, ver in versions()))  # noqa: T201 - CLI output
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omniq", description="OmniQ task queue")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: $OMNIQ_LOG_LEVEL or INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a worker pool")
    worker.add_argument("app", help="module:attribute of the OmniQ app (or a factory)")
    worker.add_argument("--concurrency", "-c", type=int, default=None, help="tasks in flight")
    worker.add_argument("--queues", "-q", default=None, help="comma-separated queues (default: settings.queues)")
    worker.add_argument("--pool", choices=("async", "thread", "process"), default=None)
    worker.add_argument("--burst", action="store_true", help="drain the ready tasks, then exit")
    worker.add_argument(
        "--processes",
        default="1",
        metavar="N",
        help="worker processes to run under one supervisor (default 1; 'auto' = the CPUs available)",
    )

    sub.add_parser("backends", help="list installed backends")

    commands = (
        ("status", "count tasks by status (and name the backend and place read)"),
        ("inspect", "show one task"),
        ("purge", "delete tasks; asks for confirmation on a terminal, needs --yes otherwise"),
    )
    for name, text in commands:
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("--app", default=None, help="module:attribute of the app (default: from environment)")
        if name == "inspect":
            command.add_argument("task_id")
        if name == "purge":
            command.add_argument("--queue", default=None)
            command.add_argument("--status", action="append", default=None, choices=[s.value for s in TaskStatus])
            command.add_argument(
                "--yes", action="store_true", help="do not ask for confirmation (required when stdin is not a terminal)"
            )
    return parser


def _app_from(spec: str | None) -> AsyncOmniQ:
    return load_app(spec) if spec else AsyncOmniQ.from_env()


def _supervise(args: argparse.Namespace, count: int) -> int:
    """``--processes N`` (N > 1): run N ordinary workers under a supervisor."""
    from omniq.worker.supervisor import Supervisor

    load_app(args.app)  # a wrong APP fails here, once, rather than in every child
    command = [sys.executable, "-m", "omniq"]
    if args.log_level:
        command += ["--log-level", args.log_level]
    command += ["worker", args.app]
    for option, value in (("--concurrency", args.concurrency), ("--queues", args.queues), ("--pool", args.pool)):
        if value is not None:
            command += [option, str(value)]
    if args.burst:
        command.append("--burst")
    return Supervisor(command, count, burst=args.burst).run()


def _stop_when_orphaned() -> None:
    """In a supervised child: stop gracefully (SIGTERM to itself) if the supervisor dies."""
    import signal
    import threading
    import time

    supervisor = os.getppid()

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="omniq-orphan-watch", daemon=True).start()


async def _worker(args: argparse.Namespace) -> int:
    if os.environ.get("OMNIQ_WORKER_PROCESS"):
        _stop_when_orphaned()
    app = load_app(args.app)
    pool = app.worker(args.concurrency, queues=args.queues, pool=args.pool, burst=args.burst)
    try:
        await pool.start(handle_signals=True)
    finally:
        await app.close()
    print(f"worker stopped: {pool.processed} task(s) processed")  # noqa: T201 - CLI output
    return 0


def _place(app: AsyncOmniQ, component: str) -> str:
    """``<type> at <where>``: a file path (absolute) or a redacted URL, with the key prefix or schema."""
    backend = getattr(app, component)
    path = getattr(backend, "path", None)
    url = getattr(backend, "url", None)
    if path is not None:
        where = os.path.abspath(path)
    elif url and "://" in str(url):
        where = redact_url(str(url))
    elif url:
        where = os.path.abspath(url)  # the file backend's root directory
    else:
        return f"{app.settings.component(component).type} (this process only)"
    for detail in ("prefix", "schema"):
        value = getattr(backend, detail, None)
        if isinstance(value, str) and value:
            where += f" ({detail} {value})"
    return f"{app.settings.component(component).type} at {where}"


def _places(app: AsyncOmniQ) -> list[str]:
    """One line when the three components share a place, else one line per component."""
    places = {component: _place(app, component) for component in COMPONENTS}
    if len(set(places.values())) == 1:
        return [f"backend: {places[COMPONENTS[0]]}"]
    return [f"{component.replace('_', ' ')}: {place}" for component, place in places.items()]


async def _status(args: argparse.Namespace) -> int:
    async with _app_from(args.app) as app:
        for line in _places(app):
            print(line)  # noqa: T201 - CLI output
        print(f"{'status':<10} {'tasks':>8}")  # noqa: T201 - CLI output
        for status in TaskStatus:
            print(f"{status.value:<10} {await app.count_tasks(status):>8}")  # noqa: T201 - CLI output
    return 0


async def _inspect(args: argparse.Namespace) -> int:
    async with _app_from(args.app) as app:
        task = await app.get_task(args.task_id)
        if task is None:
            print(f"no task {args.task_id}", file=sys.stderr)  # noqa: T201 - CLI output
            return 1
        for field in (
            "id",
            "func",
            "queue",
            "status",
            "priority",
            "attempts",
            "max_retries",
            "eta",
            "created_at",
            "started_at",
            "finished_at",
            "worker_id",
            "interval",
            "cron",
            "paused",
        ):
            value = getattr(task, field)
            print(f"{field:<12} {value.value if isinstance(value, TaskStatus) else value}")  # noqa: T201 - CLI output
        if task.error is not None:
            print(f"{'error':<12} {task.error.type}: {task.error.message}")  # noqa: T201 - CLI output
        result = await app.result_storage.get(task.id)
        if result is not None and result.payload:
            try:
                decoded: Any = app.serializer.loads(result.payload)
            except OmniQError as exc:
                decoded = f"<undecodable: {exc}>"
            print(f"{'result':<12} {decoded!r}")  # noqa: T201 - CLI output
        for event in await app.get_events(task.id):
            print(f"  {event.timestamp.isoformat()} {event.type.value:<10} attempt={event.attempt} {event.message}")  # noqa: T201
    return 0


async def _purge(args: argparse.Namespace) -> int:
    if not args.yes and not sys.stdin.isatty():
        print("refusing to purge without --yes: stdin is not a terminal to confirm on", file=sys.stderr)  # noqa: T201
        return 2
    async with _app_from(args.app) as app:
        if not args.yes and not await _confirm_purge(app, args):
            print("nothing purged")  # noqa: T201 - CLI output
            return 1
        count = await app.purge(queue=args.queue, statuses=args.status)
    print(f"purged {count} task(s)")  # noqa: T201 - CLI output
    return 0


async def _confirm_purge(app: AsyncOmniQ, args: argparse.Namespace) -> bool:
    """Ask on the terminal; True only for an explicit yes."""
    statuses = args.status or [None]
    count = sum([await app.count_tasks(status, queue=args.queue) for status in statuses])
    scope = [f"queue {args.queue}"] if args.queue else []
    scope += [f"status {', '.join(args.status)}"] if args.status else []
    what = f"{count} task(s)" + (f" ({'; '.join(scope)})" if scope else ", with all results and events")
    question = f"delete {what} from {'; '.join(_places(app))}? [y/N] "
    try:
        answer = await anyio.to_thread.run_sync(input, question)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _backends() -> int:
    from omniq.errors import OmniQError
    from omniq.plugins import backend_capabilities, installed_backends

    print(f"{'name':<10} {'distribution':<16} {'version':<9} {'component':<15} capabilities")  # noqa: T201 - CLI output
    for component, spec in sorted(installed_backends(), key=lambda item: (item[1].name, item[0])):
        try:
            declared = ", ".join(sorted(backend_capabilities(component, spec.name))) or "-"
        except OmniQError as exc:  # a driver missing or broken: say so, list the rest
            declared = f"(does not import: {exc})"
        version = _version(spec.distribution)
        print(f"{spec.name:<10} {spec.distribution:<16} {version:<9} {component:<15} {declared}")  # noqa: T201
    return 0


def _exit_despite_abandoned_threads(code: int) -> None:
    """Exit now if a timed-out thread task is still running.

    Python cannot stop a thread: a sync task that overran its timeout (or was
    cut off by shutdown) keeps its worker thread busy, and the interpreter
    would wait for it at exit. Its outcome was already recorded or released,
    so the worker process exits without waiting. Only threads inside a task
    function are reported: idle pool threads that are still winding down are not.
    """
    import logging
    import threading

    from omniq.worker.executors import threads_in_tasks

    in_tasks = threads_in_tasks()
    lingering = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if in_tasks:
        logging.getLogger("omniq.worker").warning(
            "exiting with %d task thread(s) still running (timed out or cut off by shutdown)", in_tasks
        )
    if in_tasks or lingering:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omniq`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    from omniq import logs as omniq_logs

    try:
        omniq_logs.configure(args.log_level or os.environ.get("OMNIQ_LOG_LEVEL") or "INFO")
        if args.command == "backends":
            return _backends()
        if args.command == "worker":
            from omniq.worker.supervisor import resolve_processes

            try:
                processes = resolve_processes(args.processes)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
            if processes > 1:
                return _supervise(args, processes)
        handler = {"worker": _worker, "status": _status, "inspect": _inspect, "purge": _purge}[args.command]
        code = int(anyio.run(handler, args))
        if args.command == "worker":
            _exit_despite_abandoned_threads(code)
        return code
    except OmniQError as exc:
        print(f"omniq: error: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
