"""``omniq dashboard``: serve the web dashboard (``omniq-core[dashboard]``) under uvicorn."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os

from omniq.cli.apps import app_from
from omniq.errors import ConfigurationError
from omniq.plugins import install_command

__all__ = ["register"]

logger = logging.getLogger("omniq.dashboard")

#: the modules the ``dashboard`` extra brings.
REQUIRED = ("starlette", "uvicorn", "jinja2")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dashboard`` to the command's subparsers."""
    text = "serve the web dashboard: queues, tasks, workers, schedules; retry, cancel, purge"
    command = sub.add_parser("dashboard", help=text, description=text)
    command.add_argument(
        "app",
        nargs="?",
        default=None,
        metavar="APP",
        help="module:attribute of the app (default: built from the environment)",
    )
    command.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    command.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    command.add_argument(
        "--auth",
        default=None,
        metavar="USER:PASSWORD",
        help="require HTTP Basic auth (default: $OMNIQ_DASHBOARD_AUTH, which keeps it out of the process list)",
    )
    command.add_argument(
        "--insecure", action="store_true", help="serve a non-loopback address without auth (not recommended)"
    )
    command.add_argument(
        "--no-metrics", action="store_true", help="no /metrics even when omniq-core[prometheus] is installed"
    )
    command.add_argument("--read-only", action="store_true", help="hide every action and refuse every POST")
    command.add_argument(
        "--poll", type=float, default=3.0, metavar="SECONDS", help="seconds between a page's live refreshes (default 3)"
    )
    command.set_defaults(handler=_dashboard)


def _missing() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def _dashboard(args: argparse.Namespace) -> int:
    missing = _missing()
    if missing:
        raise ConfigurationError(
            f"the dashboard needs {', '.join(missing)} (the omniq-core[dashboard] extra): "
            f"from the root of a clone of OmniQ, {install_command('omniq-core[dashboard]')}"
        )
    import uvicorn

    from omniq.dashboard.metrics import metrics_available
    from omniq.dashboard.security import AUTH_ENV, Credentials, check_exposure
    from omniq.dashboard.server import DashboardConfig, create_app

    if args.port < 0 or args.port > 65535:
        raise ConfigurationError(f"--port must be 0..65535, not {args.port}")
    if args.poll <= 0:
        raise ConfigurationError(f"--poll must be positive, not {args.poll:g}")
    auth = args.auth or os.environ.get(AUTH_ENV) or None
    credentials = Credentials.parse(auth) if auth else None
    check_exposure(args.host, credentials, args.insecure)
    app = app_from(args.app)
    config = DashboardConfig(
        read_only=args.read_only,
        credentials=credentials,
        poll_seconds=args.poll,
        loopback_hosts_only=not args.insecure,
        metrics=metrics_available() and not args.no_metrics,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    mode = ", read-only" if args.read_only else ""
    mode += ", HTTP Basic auth" if credentials else ""
    mode += ", /metrics" if config.metrics else ""
    logger.info("OmniQ dashboard on http://%s:%d/%s", host, args.port, f" ({mode[2:]})" if mode else "")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(app, config),
            host=args.host,
            port=args.port,
            log_config=None,  # omniq's logging (configured by the command) prints uvicorn's lines too
            access_log=False,
            server_header=False,
        )
    )
    server.run()
    return 0
