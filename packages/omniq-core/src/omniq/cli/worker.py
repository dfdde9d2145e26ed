"""``omniq worker``: one worker process, or N under a supervisor (``--processes``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from omniq.cli.apps import load_app
from omniq.cli.output import emit
from omniq.errors import ConfigurationError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``worker`` to the command's subparsers."""
    worker = sub.add_parser(
        "worker",
        help="run a worker pool",
        description=(
            "Run a worker pool. It logs each task's failure, retry, timeout, expiry and lost lease; "
            "its success and release lines (INFO, with the run time) need an explicit --log-level INFO "
            "or DEBUG (or $OMNIQ_LOG_LEVEL): a line per task slows a drain of no-op tasks by about a quarter."
        ),
    )
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
    worker.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log lines as text, or one JSON object each (default: setting log_format / $OMNIQ_LOG_FORMAT, text)",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="P",
        help="serve Prometheus metrics at :P/metrics (omniq[prometheus])",
    )
    worker.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the worker (or the supervisor) until it stops; the exit code."""
    from omniq.worker.supervisor import resolve_processes

    try:
        processes = resolve_processes(args.processes)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if processes > 1:
        return _supervise(args, processes)
    import anyio

    code = int(anyio.run(_work, args))
    _exit_despite_abandoned_threads(code)
    return code


def _supervise(args: argparse.Namespace, count: int) -> int:
    """``--processes N`` (N > 1): run N ordinary workers under a supervisor."""
    from omniq.worker.supervisor import Supervisor

    app = load_app(args.app)  # a wrong APP fails here, once, rather than in every child
    command = [sys.executable, "-m", "omniq"]
    if args.log_level:
        command += ["--log-level", args.log_level]
    command += ["worker", args.app]
    for option, value in (("--concurrency", args.concurrency), ("--queues", args.queues), ("--pool", args.pool)):
        if value is not None:
            command += [option, str(value)]
    if args.burst:
        command.append("--burst")
    if args.log_format:
        command += ["--log-format", args.log_format]
    if args.metrics_port is None:
        return Supervisor(command, count, burst=args.burst).run()
    from omniq.contrib.prometheus import child_exited, serve_metrics

    metrics = serve_metrics(
        args.metrics_port, app, multiprocess=True
    )  # before the children start: they inherit its env
    try:
        return Supervisor(command, count, burst=args.burst, on_child_exit=child_exited).run()
    finally:
        metrics.close()


def _stop_when_orphaned() -> None:
    """In a supervised child: stop gracefully (SIGTERM to itself) if the supervisor dies."""
    supervisor = os.getppid()

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="omniq-orphan-watch", daemon=True).start()


async def _work(args: argparse.Namespace) -> int:
    if os.environ.get("OMNIQ_WORKER_PROCESS"):
        _stop_when_orphaned()
    app = load_app(args.app)
    _configure_logs(args.log_format or app.settings.log_format, explicit_level=bool(args.log_level))
    metrics = None
    if args.metrics_port is not None:
        from omniq.contrib.prometheus import serve_metrics

        metrics = serve_metrics(args.metrics_port, app)
    elif os.environ.get("OMNIQ_PROMETHEUS_CHILD"):
        from omniq.contrib.prometheus import enable_in_child

        enable_in_child()
    pool = app.worker(args.concurrency, queues=args.queues, pool=args.pool, burst=args.burst)
    try:
        await pool.start(handle_signals=True)
    finally:
        if metrics is not None:
            metrics.close()
        await app.close()
    emit(f"worker stopped: {pool.processed} task(s) processed")
    return 0


def _configure_logs(log_format: str, *, explicit_level: bool) -> None:
    """Write the worker's log lines as text or JSON (the level stays as the command set it).

    Unless a level was asked for (``--log-level``, ``$OMNIQ_LOG_LEVEL``), the
    per-task lines stop at WARNING (failures, retries, expiries, lost leases):
    a success line per task slows a drain of no-op tasks by about 27 % (25-34 %
    more worker CPU per task; benchmarks/README.md), more than the 5 % a default may cost.
    """
    from omniq import logs as omniq_logs
    from omniq.worker.task_log import logger as task_logger

    level = logging.getLogger(omniq_logs.ROOT).level or logging.WARNING
    omniq_logs.configure(level, log_format=log_format)
    if not explicit_level and not os.environ.get("OMNIQ_LOG_LEVEL"):
        task_logger.setLevel(max(level, logging.WARNING))


def _exit_despite_abandoned_threads(code: int) -> None:
    """Exit now if a timed-out thread task is still running.

    Python cannot stop a thread: a sync task that overran its timeout (or was
    cut off by shutdown) keeps its worker thread busy, and the interpreter
    would wait for it at exit. Its outcome was already recorded or released,
    so the worker process exits without waiting. Only threads inside a task
    function are reported: idle pool threads that are still winding down are not.
    """
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
