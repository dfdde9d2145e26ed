"""Prometheus metrics for OmniQ (``omniq[prometheus]``: prometheus-client).

An ordinary lifecycle plugin (:mod:`omniq.hookspecs`), off until enabled, so
it costs nothing unless asked for:

* ``omniq worker APP --metrics-port 9100`` enables it in the worker and
  serves ``/metrics`` on that port; with ``--processes N`` the supervisor
  serves ONE endpoint with the sum over its children (prometheus-client's
  multiprocess mode: each child writes its values to files in a temporary
  directory, ``$PROMETHEUS_MULTIPROC_DIR``, which the supervisor aggregates);
* in your own process, call :func:`enable` before the app connects or the
  worker starts, and serve :func:`render_metrics` (the dashboard serves it
  at ``/metrics``) or call :func:`serve_metrics`.

Metrics (``queue`` and ``task`` labels on all but the last two):

* counters ``omniq_tasks_enqueued_total`` (in the producer's process),
  ``omniq_tasks_started_total``, ``omniq_tasks_succeeded_total``,
  ``omniq_tasks_failed_total`` (for good), ``omniq_tasks_retried_total``;
* histograms ``omniq_task_duration_seconds`` (run time of each attempt that
  finished: succeeded, failed or retried) and
  ``omniq_task_queue_wait_seconds`` (from ready, its ``eta`` or creation, to start);
* gauges, sampled rather than kept per task: ``omniq_tasks_in_flight``
  (tasks running, summed over live worker processes, as each worker last
  reported at its heartbeat) and ``omniq_queue_depth{queue,status}``, read
  every ``sample_every`` seconds from ``app.queue_stats()`` by the serving process.

The hooks note each event and apply them in batches (:mod:`omniq.contrib.task_metrics`):
about 2.5 µs per task in all; benchmarks/metrics_overhead.py measures the drain with it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any

from omniq.contrib.task_metrics import TaskMetrics
from omniq.errors import ConfigurationError

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ

__all__ = [
    "CHILD_ENV",
    "PLUGIN_NAME",
    "MetricsServer",
    "child_exited",
    "disable",
    "enable",
    "enable_in_child",
    "render_metrics",
    "sample_queue_depth",
    "serve_metrics",
]

logger = logging.getLogger("omniq.contrib.prometheus")

PLUGIN_NAME = "omniq.contrib.prometheus"
#: set (to "1") by a supervisor serving metrics, so its worker processes enable the plugin.
CHILD_ENV = "OMNIQ_PROMETHEUS_CHILD"
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: how often the serving process samples ``omniq_queue_depth`` (seconds).
SAMPLE_EVERY = 15.0
_lock = threading.Lock()
_plugin: TaskMetrics | None = None


def _require() -> None:
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigurationError(
            "Prometheus metrics need prometheus-client: pip install './packages/omniq-core[prometheus]' "
            "(or pip install prometheus-client)"
        )


def enable() -> None:
    """Register the metrics plugin in this process (idempotent).

    Call it before the app connects (for ``omniq_tasks_enqueued_total``) or
    the worker starts: the core reads which hooks are implemented then.
    """
    global _plugin
    from omniq import plugins

    _require()
    with _lock:
        if _plugin is None:
            _plugin = TaskMetrics()
        if plugins.get_plugin_manager().get_plugin(PLUGIN_NAME) is None:
            plugins.register(_plugin, name=PLUGIN_NAME)


def disable() -> None:
    """Unregister the plugin (its metrics keep their values); apps built afterwards do not call it."""
    from omniq import plugins

    manager = plugins.get_plugin_manager()
    if manager.get_plugin(PLUGIN_NAME) is not None:
        manager.unregister(name=PLUGIN_NAME)


def enable_in_child() -> bool:
    """In a worker process started by a supervisor serving metrics (``$OMNIQ_PROMETHEUS_CHILD``): enable; True if so."""
    if os.environ.get(CHILD_ENV) != "1":
        return False
    enable()
    return True


def child_exited(pid: int) -> None:
    """The supervisor's call when a worker process exits: its live gauges (in flight) leave the sum."""
    if os.environ.get(_MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # untyped in prometheus-client


def _registry() -> Any:
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    path = os.environ.get(_MULTIPROC_ENV)
    if not path:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]  # untyped in prometheus-client
    return registry


def render_metrics() -> tuple[bytes, str]:
    """This process's metrics (the sum over all processes in multiprocess mode) as (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_Scraped(_registry())), CONTENT_TYPE_LATEST


class _Scraped:
    """A registry read with this process's noted events applied first (what a scrape reads)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Any:
        if _plugin is not None:
            _plugin.flush()
        return self._registry.collect()

    def restricted_registry(self, names: Any) -> Any:
        if _plugin is not None:
            _plugin.flush()
        return self._registry.restricted_registry(names)


async def sample_queue_depth(app: AsyncOmniQ, every: float = SAMPLE_EVERY) -> None:
    """Set ``omniq_queue_depth`` from ``app.queue_stats()`` now and every ``every`` seconds, until cancelled.

    A failing read (the engine away) is logged and tried again at the next sample.
    """
    enable()
    assert _plugin is not None
    while True:
        try:
            stats = await app.queue_stats()
        except Exception as exc:
            logger.warning("cannot sample the queue depth: %s", exc)
        else:
            _plugin.set_depth({(s.queue, status): count for s in stats for status, count in s.counts.items()})
        await asyncio.sleep(every)


class MetricsServer:
    """What :func:`serve_metrics` started: the HTTP server, the depth sampler, the multiprocess directory."""

    def __init__(self, port: int, server: Any, thread: threading.Thread, directory: str | None) -> None:
        self.port = port
        self._server = server
        self._thread = thread
        self._directory = directory
        self._sampler: asyncio.Task[None] | None = None

    def close(self) -> None:
        """Stop serving and sampling; remove the multiprocess directory this server made."""
        if self._sampler is not None:
            self._sampler.cancel()
        self._server.shutdown()
        self._server.server_close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            os.environ.pop(_MULTIPROC_ENV, None)
            os.environ.pop(CHILD_ENV, None)


def serve_metrics(
    port: int,
    app: AsyncOmniQ | None = None,
    *,
    host: str = "0.0.0.0",
    multiprocess: bool = False,
    sample_every: float = SAMPLE_EVERY,
) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread, enable the plugin, and sample the queue depth.

    Args:
        port: the TCP port (0: any free one; ``MetricsServer.port`` says which).
        host: the address to bind (default: every interface, as a scrape
            target is read from other hosts; ``127.0.0.1`` for this host only).
        sample_every: seconds between two samples of the queue depth.
        app: the app whose ``queue_stats()`` feeds ``omniq_queue_depth``
            (None: no sampling). Called inside a running event loop (a
            single worker), the sampler runs on that loop with this app;
            otherwise (a supervisor) on a thread of its own with a new app
            built from ``app.settings``.
        multiprocess: serve the sum over worker processes (a supervisor):
            make a temporary directory, set ``$PROMETHEUS_MULTIPROC_DIR`` and
            ``$OMNIQ_PROMETHEUS_CHILD`` for the children (call it before
            starting them, and before anything imports prometheus_client),
            and remove it on :meth:`MetricsServer.close`.
    """
    from http.server import ThreadingHTTPServer

    _require()
    directory = None
    if multiprocess:
        directory = tempfile.mkdtemp(prefix="omniq-metrics-")
        os.environ[_MULTIPROC_ENV] = directory
        os.environ[CHILD_ENV] = "1"
    from prometheus_client import values
    from prometheus_client.exposition import MetricsHandler

    if multiprocess:  # prometheus_client picks file-backed values at import: the app may have imported it earlier
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

    enable()
    handler = MetricsHandler.factory(_Scraped(_registry()))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="omniq-metrics", daemon=True)
    thread.start()
    metrics = MetricsServer(server.server_address[1], server, thread, directory)
    if app is not None:
        _start_sampler(metrics, app, sample_every)
    return metrics


def _start_sampler(metrics: MetricsServer, app: AsyncOmniQ, every: float) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        metrics._sampler = loop.create_task(sample_queue_depth(app, every))
        return

    async def own_app() -> None:
        from omniq.app import AsyncOmniQ

        sampling = AsyncOmniQ(app.settings)
        try:
            await sample_queue_depth(sampling, every)
        finally:
            with contextlib.suppress(Exception):
                await sampling.close()

    threading.Thread(target=asyncio.run, args=(own_app(),), name="omniq-metrics-sampler", daemon=True).start()
