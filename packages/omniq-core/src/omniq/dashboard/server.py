"""The dashboard as an ASGI application: :func:`create_app` wires the pages, the guard and the assets.

Starlette serves it (``omniq-core[dashboard]``); ``omniq dashboard`` runs it
under uvicorn. The app it shows is connected when the server starts and
closed when it stops (its lifespan), on the server's own event loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from omniq.app import AsyncOmniQ
from omniq.cli.apps import places
from omniq.dashboard import views
from omniq.dashboard.data import age, when
from omniq.dashboard.metrics import metrics_route, sampling
from omniq.dashboard.security import SECURITY_HEADERS, Credentials, is_loopback
from omniq.errors import OmniQError, redact_url

__all__ = ["DashboardConfig", "create_app"]

logger = logging.getLogger("omniq.dashboard")

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class DashboardConfig:
    """How the dashboard behaves.

    Attributes:
        read_only: hide every action and refuse every POST.
        credentials: HTTP Basic credentials every request must carry (None: no auth).
        poll_seconds: how often an open page refreshes its live part.
        loopback_hosts_only: without credentials, answer only requests addressed
            to a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``), which
            stops DNS-rebinding pages; turned off by ``--insecure``.
        manage_app: connect the app at start-up and close it at shutdown.
        metrics: serve ``/metrics`` and sample the queue depth (needs
            ``omniq-core[prometheus]``; see :mod:`omniq.dashboard.metrics`).
    """

    read_only: bool = False
    credentials: Credentials | None = None
    poll_seconds: float = 3.0
    loopback_hosts_only: bool = True
    manage_app: bool = True
    metrics: bool = False


def _shown(value: Any) -> Any:
    """Every value a template prints: a URL's password hidden (an error message may hold one).

    Markup (a macro's output) is left alone: its own values went through here already.
    """
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return redact_url(value)
    return value


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,  # every template is HTML; task arguments and errors are user data
        finalize=_shown,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(when=when, age=age)
    return env


def _guard(
    config: DashboardConfig,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Auth and host checks before every request, safe headers on every response."""
    realm = {"WWW-Authenticate": 'Basic realm="OmniQ dashboard", charset="UTF-8"'}

    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response: Response
        if config.credentials is not None and not config.credentials.accepts(request.headers.get("authorization")):
            response = PlainTextResponse("authentication required\n", status_code=401, headers=realm)
        elif config.credentials is None and config.loopback_hosts_only and not is_loopback(request.url.hostname or ""):
            response = PlainTextResponse("this dashboard answers loopback addresses only\n", status_code=421)
        else:
            response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return guard


def create_app(app: AsyncOmniQ, config: DashboardConfig | None = None) -> Starlette:
    """The dashboard of ``app`` as an ASGI application.

    Args:
        app: the OmniQ app to show (its registered tasks decode the arguments).
        config: read-only mode, credentials, refresh interval (defaults: open
            actions, no auth, loopback hosts only, a refresh every 3 s, no metrics).

    Raises:
        ConfigurationError: ``config.metrics`` without prometheus-client.
    """
    config = config or DashboardConfig()

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if config.manage_app:
            await app.connect()
            logger.info("dashboard of %s", "; ".join(places(app)))  # URLs redacted
        try:
            async with sampling(app) if config.metrics else contextlib.nullcontext():
                yield
        finally:
            if config.manage_app:
                await app.close()

    routes: list[Any] = views.routes()
    if config.metrics:
        routes.append(metrics_route())
    routes.append(Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"))
    web = Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_guard(config))],
        lifespan=lifespan,
        exception_handlers={404: views.not_found, OmniQError: views.backend_error},
    )
    web.state.omniq = app
    web.state.config = config
    web.state.templates = _templates()
    return web
