"""OmniQ's web dashboard: queues, tasks, workers and schedules, with retry, cancel and purge.

Install ``omniq-core[dashboard]`` (starlette, uvicorn, jinja2) and run
``omniq dashboard APP``; or mount :func:`create_app` in your own ASGI server.
No build step, no CDN: the templates, stylesheet and script ship in this package.

Modules: :mod:`~omniq.dashboard.server` (the ASGI app, its guard and config),
:mod:`~omniq.dashboard.views` (one handler per page and action),
:mod:`~omniq.dashboard.data` (what each page reads through the app's API),
:mod:`~omniq.dashboard.charts` (the throughput chart's SVG geometry),
:mod:`~omniq.dashboard.security` (exposure rules, Basic auth, CSRF tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins import lazy_exports

if TYPE_CHECKING:
    from omniq.dashboard.security import Credentials
    from omniq.dashboard.server import DashboardConfig, create_app

__all__ = ["Credentials", "DashboardConfig", "create_app"]

__getattr__ = lazy_exports(
    __name__,
    {
        "Credentials": "omniq.dashboard.security",
        "DashboardConfig": "omniq.dashboard.server",
        "create_app": "omniq.dashboard.server",
    },
)
