"""``/metrics`` on the dashboard, through :mod:`omniq.contrib.prometheus` (``omniq-core[prometheus]``).

Imported lazily: without prometheus-client the dashboard has no ``/metrics``
and nothing of it is loaded. With it, the dashboard's process enables the
metrics plugin, serves :func:`~omniq.contrib.prometheus.render_metrics` (the
sum over processes when ``$PROMETHEUS_MULTIPROC_DIR`` is shared with the
workers) and samples ``omniq_queue_depth{queue,status}`` from
``app.queue_stats()`` while it runs.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import AsyncIterator
from types import ModuleType

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from omniq.app import AsyncOmniQ
from omniq.errors import ConfigurationError
from omniq.plugins import install_command

__all__ = ["metrics_available", "metrics_route", "sampling"]

_MODULE = "omniq.contrib.prometheus"


def metrics_available() -> bool:
    """Whether prometheus-client and OmniQ's metrics plugin are both installed."""
    return importlib.util.find_spec("prometheus_client") is not None and importlib.util.find_spec(_MODULE) is not None


def _prometheus() -> ModuleType:
    if not metrics_available():
        raise ConfigurationError(
            f"the dashboard's /metrics needs prometheus-client: {install_command('omniq-core[prometheus]')}"
        )
    return importlib.import_module(_MODULE)


def metrics_route() -> Route:
    """``GET /metrics`` in Prometheus's text format.

    Raises:
        ConfigurationError: prometheus-client is not installed.
    """
    render = _prometheus().render_metrics

    async def metrics(request: Request) -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)

    return Route("/metrics", metrics, methods=["GET"])


@contextlib.asynccontextmanager
async def sampling(app: AsyncOmniQ) -> AsyncIterator[None]:
    """Enable the metrics plugin and sample the queue depth until the block ends."""
    prometheus = _prometheus()
    prometheus.enable()
    async with anyio.create_task_group() as group:
        group.start_soon(prometheus.sample_queue_depth, app)
        try:
            yield
        finally:
            group.cancel_scope.cancel()
