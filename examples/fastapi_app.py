"""A FastAPI app that enqueues a task per request, with a worker running inside the server.

Run it (``pip install './packages/omniq-core[fastapi]' uvicorn``), from the repository root::

    python examples/fastapi_app.py                # or: uvicorn examples.fastapi_app:app
    curl -X POST localhost:8000/counts -H 'content-type: application/json' -d '{"text": "to be or not to be"}'
    curl localhost:8000/tasks/<task_id>           # {"status": "succeeded", "result": {"be": 2, ...}}

The lifespan connects OmniQ at startup, runs a worker pool on the server's
event loop, and at shutdown (Ctrl-C, SIGTERM) lets running tasks finish
before it closes. To run the tasks elsewhere, drop ``worker=True`` and start
``omniq worker examples.fastapi_app:omniq`` beside the server.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from omniq import AsyncOmniQ, TaskStatus
from omniq.contrib.fastapi import OmniQDep, lifespan

omniq = AsyncOmniQ()  # settings from OMNIQ_* variables: the embedded SQLite store by default


@omniq.task(name="word_count", max_retries=2)
async def word_count(text: str) -> dict[str, int]:
    return dict(Counter(text.lower().split()).most_common(3))


class CountRequest(BaseModel):
    text: str


app = FastAPI(title="word counts", lifespan=lifespan(omniq, worker=True, concurrency=4))


@app.post("/counts", status_code=202)
async def create_count(body: CountRequest, q: OmniQDep) -> dict[str, str]:
    return {"task_id": await q.enqueue(word_count, body.text)}


@app.get("/tasks/{task_id}")
async def task_status(task_id: str, q: OmniQDep) -> dict[str, Any]:
    result = await q.get_result(task_id)
    if result is None:
        task = await q.get_task(task_id)
        if task is None:
            raise HTTPException(status_code=404, detail="no such task")
        if task.status in (TaskStatus.PENDING, TaskStatus.RUNNING):
            return {"task_id": task_id, "status": task.status.value}
        # It finished between the two reads: its result is stored right after (or built from the task).
        result = await q.get_result(task_id, wait=True, timeout=5)
        if result is None:
            return {"task_id": task_id, "status": task.status.value}
    error = f"{result.error.type}: {result.error.message}" if result.error else None
    return {"task_id": task_id, "status": result.status.value, "result": result.result, "error": error}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
