"""A Flask app that enqueues a task per request; an ``omniq worker`` process runs them.

Run it (``pip install './packages/omniq-core[flask]'``), from the repository root, in two terminals::

    python examples/flask_app.py                  # the web process, on port 5000 (or $PORT)
    omniq worker examples.flask_app:omniq         # the worker: imports this module, runs the tasks
    curl -X POST localhost:5000/invoices -H 'content-type: application/json' -d '{"customer": "acme", "amounts": [3, 4.5]}'
    curl localhost:5000/tasks/<task_id>           # {"status": "succeeded", "result": {"total": 7.5, ...}}

The web process connects to the store on its first enqueue and keeps that
connection for every request; it closes it when the process exits.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, abort, request

from omniq import OmniQ, TaskStatus
from omniq.contrib.flask import FlaskOmniQ, current_omniq

omniq = OmniQ()  # settings from OMNIQ_* variables: the embedded SQLite store by default
omniq_ext = FlaskOmniQ(omniq=omniq)


@omniq.task(name="render_invoice", max_retries=2)  # a name both processes agree on, however they start
def render_invoice(customer: str, amounts: list[float]) -> dict[str, Any]:
    return {"customer": customer, "lines": len(amounts), "total": round(sum(amounts), 2)}


def create_app() -> Flask:
    app = Flask(__name__)
    omniq_ext.init_app(app)

    @app.post("/invoices")
    def create_invoice() -> tuple[dict[str, str], int]:
        body = request.get_json(force=True)
        task_id = render_invoice.enqueue(str(body["customer"]), [float(a) for a in body["amounts"]])
        return {"task_id": task_id}, 202

    @app.get("/tasks/<task_id>")
    def task_status(task_id: str) -> dict[str, Any]:
        result = current_omniq.get_result(task_id)
        if result is None:
            task = current_omniq.get_task(task_id)
            if task is None:
                abort(404, "no such task")
            if task.status in (TaskStatus.PENDING, TaskStatus.RUNNING):
                return {"task_id": task_id, "status": task.status.value}
            # It finished between the two reads: its result is stored right after (or built from the task).
            result = current_omniq.get_result(task_id, wait=True, timeout=5)
            if result is None:
                return {"task_id": task_id, "status": task.status.value}
        error = f"{result.error.type}: {result.error.message}" if result.error else None
        return {"task_id": task_id, "status": result.status.value, "result": result.result, "error": error}

    return app


app = create_app()

if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")))
