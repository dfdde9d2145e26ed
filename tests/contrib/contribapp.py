"""The app the contrib tests run in real worker processes (configured by OMNIQ_* variables).

With ``$OTEL_SPANS_FILE`` set, it traces through :mod:`omniq.contrib.otel`
with the OpenTelemetry SDK, each finished span written as one JSON line to
that file (the worker process's exporter; the test reads it).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

from omniq import OmniQ

_tracers: list[Any] = []  # the worker's tracer, once tracing is on


def _trace_to_file(path: str) -> None:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    import omniq.contrib.otel

    class JsonLines(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            with open(path, "a") as out:
                for span in spans:
                    context = span.get_span_context()
                    assert context is not None
                    out.write(
                        json.dumps(
                            {
                                "name": span.name,
                                "kind": span.kind.name,
                                "trace_id": f"{context.trace_id:032x}",
                                "span_id": f"{context.span_id:016x}",
                                "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
                                "status": span.status.status_code.name,
                                "attributes": dict(span.attributes or {}),
                            }
                        )
                        + "\n"
                    )
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
    omniq.contrib.otel.enable(tracer_provider=provider)
    _tracers.append(provider.get_tracer("contribapp"))


if os.environ.get("OTEL_SPANS_FILE"):  # before the app: a worker reads the hooks when it starts
    _trace_to_file(os.environ["OTEL_SPANS_FILE"])

app = OmniQ()


@app.task(name="add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="traced")
async def traced() -> None:
    """Starts a span of its own: a child of the worker's run span."""
    with _tracers[0].start_as_current_span("inner"):
        await asyncio.sleep(0)


@app.task(name="boom")
def boom() -> None:
    raise ValueError("boom")


@app.task(name="nap")
async def nap(seconds: float) -> int:
    await asyncio.sleep(seconds)
    return os.getpid()
