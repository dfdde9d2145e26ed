"""OpenTelemetry tracing for OmniQ (``omniq[otel]``: opentelemetry-api only).

An ordinary lifecycle plugin (:mod:`omniq.hookspecs`), off until enabled::

    import omniq.contrib.otel

    omniq.contrib.otel.enable()  # in the producer and in the worker's app module

Call it before the app connects (producer) and before the worker starts,
in every process: the core reads which hooks are implemented then. Which
SDK, exporter and sampler record the spans is the application's choice
(the globally configured tracer provider, or ``enable(tracer_provider=...)``).

* **enqueue**: a span ``omniq enqueue <task name>`` (kind PRODUCER), a child
  of the caller's current span, from just before the task is stored until it
  was; its W3C trace context (``traceparent``, ``tracestate``, through the
  configured propagator) is stored in ``task.headers``;
* **run**: the worker's span ``omniq run <task name>`` (kind CONSUMER) is a
  child of that enqueue span, current while the task function runs (spans
  the task starts are its children), ended when the outcome is recorded;
  a failure (for good, or retried) sets its status to ERROR and adds an
  ``exception`` event with the error's type, message and traceback.

Attributes: ``messaging.system`` = ``omniq``, ``messaging.operation.type``
(``send`` / ``process``), ``messaging.destination.name`` (the queue),
``messaging.message.id`` (the task id), and ``omniq.task.id``,
``omniq.task.name``, ``omniq.task.queue``, ``omniq.task.attempt``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context, propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        f"omniq.contrib.otel needs opentelemetry-api: pip install './packages/omniq-core[otel]' ({exc})"
    ) from exc

from omniq.hookspecs import hookimpl

if TYPE_CHECKING:
    from omniq.models import Task, TaskError, TaskResult

__all__ = ["PLUGIN_NAME", "disable", "enable"]

PLUGIN_NAME = "omniq.contrib.otel"
#: spans open at once (enqueues not yet stored, runs not yet finished) before the oldest is ended unrecorded.
MAX_OPEN_SPANS = 10_000
_SCOPE = "omniq"


def _attributes(task: Task, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": "omniq",
        "messaging.operation.type": operation,
        "messaging.destination.name": task.queue,
        "messaging.message.id": task.id,
        "omniq.task.id": task.id,
        "omniq.task.name": task.func,
        "omniq.task.queue": task.queue,
        "omniq.task.attempt": task.attempts,
    }


class _OpenSpans:
    """Spans by task id between two hooks (a bounded dict: a span whose end never comes is ended, not kept)."""

    def __init__(self) -> None:
        self._spans: dict[str, trace.Span] = {}
        self._lock = threading.Lock()

    def put(self, task_id: str, span: trace.Span) -> None:
        with self._lock:
            self._spans[task_id] = span
            if len(self._spans) > MAX_OPEN_SPANS:
                oldest = next(iter(self._spans))
                self._spans.pop(oldest).end()

    def pop(self, task_id: str) -> trace.Span | None:
        with self._lock:
            return self._spans.pop(task_id, None)


class _Plugin:
    def __init__(self, tracer_provider: trace.TracerProvider | None) -> None:
        self.tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self.enqueues = _OpenSpans()
        self.runs = _OpenSpans()

    @hookimpl
    def omniq_task_headers(self, task: Task) -> dict[str, str] | None:
        span = self.tracer.start_span(
            f"omniq enqueue {task.func}", kind=SpanKind.PRODUCER, attributes=_attributes(task, "send")
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        self.enqueues.put(task.id, span)
        return carrier or None

    @hookimpl
    def omniq_task_enqueued(self, task: Task) -> None:
        span = self.enqueues.pop(task.id)
        if span is not None:
            span.end()

    @hookimpl
    def omniq_task_run(self, task: Task, worker_id: str) -> contextlib.AbstractContextManager[None]:
        return self._run(task, worker_id)

    @contextlib.contextmanager
    def _run(self, task: Task, worker_id: str) -> Iterator[None]:
        parent = propagate.extract(task.headers or {})
        attributes = _attributes(task, "process")
        attributes["omniq.worker.id"] = worker_id
        span = self.tracer.start_span(
            f"omniq run {task.func}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        self.runs.put(task.id, span)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            yield
        finally:
            otel_context.detach(token)

    def _end(self, task: Task, error: TaskError | None = None, outcome: str = "succeeded") -> None:
        span = self.runs.pop(task.id)
        if span is None:
            return
        span.set_attribute("omniq.task.outcome", outcome)
        if error is not None:
            span.add_event(
                "exception",
                {
                    "exception.type": error.type,
                    "exception.message": error.message,
                    "exception.stacktrace": error.traceback,
                },
            )
            span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))
        span.end()

    @hookimpl
    def omniq_task_succeeded(self, task: Task, result: TaskResult, worker_id: str) -> None:
        self._end(task)

    @hookimpl
    def omniq_task_failed(self, task: Task, error: TaskError, worker_id: str) -> None:
        self._end(task, error, "failed")

    @hookimpl
    def omniq_task_retried(self, task: Task, error: TaskError, worker_id: str, delay: float) -> None:
        self._end(task, error, "retried")

    @hookimpl
    def omniq_task_released(self, task: Task, worker_id: str) -> None:
        self._end(task, outcome="released")

    @hookimpl
    def omniq_task_lease_lost(self, task: Task, worker_id: str) -> None:
        self._end(task, outcome="lease_lost")


def enable(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Register the tracing plugin in this process (replacing an earlier one).

    Args:
        tracer_provider: where the spans go; None: the global one
            (``opentelemetry.trace.set_tracer_provider``), looked up now.
    """
    from omniq import plugins

    disable()
    plugins.register(_Plugin(tracer_provider), name=PLUGIN_NAME)


def disable() -> None:
    """Unregister the plugin; apps connected and workers started afterwards trace nothing."""
    from omniq import plugins

    manager = plugins.get_plugin_manager()
    if manager.get_plugin(PLUGIN_NAME) is not None:
        manager.unregister(name=PLUGIN_NAME)
