"""omniq.contrib.otel: the producer's trace continues in a real worker process."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ, Settings
from tests.faults.conftest import wait_until

otel = pytest.importorskip("omniq.contrib.otel", exc_type=ImportError)
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """The producer's spans (this process), through a provider of its own (the global one is left alone)."""
    memory = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    otel.enable(tracer_provider=provider)
    try:
        yield memory
    finally:
        otel.disable()


def _spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_run_span_is_a_child_of_the_enqueue_span_across_processes(
    exporter: InMemorySpanExporter, start_worker: Start, app_env: dict[str, str], tmp_path: Path
) -> None:
    spans_file = tmp_path / "worker-spans.jsonl"
    worker = start_worker(env={"OTEL_SPANS_FILE": str(spans_file)})
    tracer = sdk_trace.TracerProvider().get_tracer("test")  # any tracer: only its context matters to omniq
    settings = Settings(backend="sqlite", base_dir=Path(app_env["OMNIQ_BASE_DIR"]))
    with OmniQ(settings) as producer, tracer.start_as_current_span("request") as request:
        ok_id = producer.enqueue("add", 1, 2)
        boom_id = producer.enqueue("boom", max_retries=0)
        traced_id = producer.enqueue("traced")
        headers = producer.get_task(ok_id).headers  # type: ignore[union-attr]
    assert headers is not None and headers["traceparent"].startswith("00-")

    runs = wait_until(lambda: (s := _spans(spans_file)) and len(s) >= 4 and s, 60, "the worker's four spans")
    enqueues = {span.attributes["omniq.task.id"]: span for span in exporter.get_finished_spans() if span.attributes}
    assert {e.name for e in enqueues.values()} == {"omniq enqueue add", "omniq enqueue boom", "omniq enqueue traced"}
    by_task = {run["attributes"]["omniq.task.id"]: run for run in runs if "omniq.task.id" in run["attributes"]}
    for task_id in (ok_id, boom_id, traced_id):
        sent, run = enqueues[task_id], by_task[task_id]
        context = sent.get_span_context()
        assert context is not None and sent.kind.name == "PRODUCER"
        assert sent.parent is not None and sent.parent.span_id == request.get_span_context().span_id
        assert run["trace_id"] == f"{context.trace_id:032x}"  # the producer's trace ...
        assert run["parent_span_id"] == f"{context.span_id:016x}"  # ... the enqueue span its parent
        assert run["kind"] == "CONSUMER"
        assert run["attributes"]["messaging.destination.name"] == "default"
        assert run["attributes"]["omniq.task.attempt"] == 1
    assert by_task[ok_id]["name"] == "omniq run add" and by_task[ok_id]["status"] == "UNSET"
    assert by_task[boom_id]["name"] == "omniq run boom" and by_task[boom_id]["status"] == "ERROR"
    [inner] = [span for span in runs if span["name"] == "inner"]  # the task's own span: a child of the run span
    assert inner["parent_span_id"] == by_task[traced_id]["span_id"]
    assert inner["trace_id"] == by_task[traced_id]["trace_id"]
    assert enqueues[ok_id].attributes["omniq.task.name"] == "add"  # type: ignore[index]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
