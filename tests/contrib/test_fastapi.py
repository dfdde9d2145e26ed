"""omniq.contrib.fastapi: the lifespan and the dependency, through httpx's ASGI transport, on SQLite and Redis.

httpx's transport does not send lifespan events, so each test enters the app's lifespan itself
(``app.router.lifespan_context``), as a server does at startup and shutdown.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.types import Receive, Scope, Send

from omniq import AsyncOmniQ, ConfigurationError, OmniQ, Settings, TaskStatus
from omniq.contrib.fastapi import Lifespan, OmniQDep, lifespan, running

Start = Callable[..., Any]


async def add(a: int, b: int) -> int:
    return a + b


async def nap(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "rested"


def new_app(settings: Settings) -> AsyncOmniQ:
    omniq = AsyncOmniQ(settings)
    omniq.register(add, name="add")
    omniq.register(nap, name="nap")
    return omniq


def make_api(lifespan: Lifespan | None) -> FastAPI:
    """A small API: enqueue ``add`` or ``nap``, read a task's status and result."""
    api = FastAPI(lifespan=lifespan)

    @api.post("/add")
    async def enqueue_add(a: int, b: int, q: OmniQDep) -> dict[str, str]:
        return {"task_id": await q.enqueue("add", a, b)}

    @api.post("/nap")
    async def enqueue_nap(seconds: float, q: OmniQDep) -> dict[str, str]:
        return {"task_id": await q.enqueue("nap", seconds)}

    @api.get("/tasks/{task_id}")
    async def task_status(task_id: str, q: OmniQDep) -> dict[str, Any]:
        result = await q.get_result(task_id)
        if result is None:
            task = await q.get_task(task_id)
            if task is None or task.status in (TaskStatus.PENDING, TaskStatus.RUNNING):
                return {"status": task.status.value if task else "unknown"}
            result = await q.get_result(task_id, wait=True, timeout=5)  # finished between the reads
        if result is not None:
            return {"status": result.status.value, "result": result.result}
        task = await q.get_task(task_id)
        return {"status": task.status.value if task else "unknown"}

    @api.get("/state")
    async def state(request: Request) -> dict[str, Any]:
        return {"greeting": getattr(request.state, "greeting", None)}

    return api


@asynccontextmanager
async def serving(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app between its startup and its shutdown, and a client talking to it in process.

    As a server does, each request's scope gets a copy of the state the lifespan yielded (``request.state``).
    """
    async with api.router.lifespan_context(api) as state:

        async def server(scope: Scope, receive: Receive, send: Send) -> None:
            if state is not None:
                scope["state"] = dict(state)
            await api(scope, receive, send)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server), base_url="http://test") as client:
            yield client


async def wait_for(client: httpx.AsyncClient, task_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
    """Poll the status endpoint until the task is in one of ``statuses``."""
    with anyio.fail_after(timeout):
        while True:
            response = await client.get(f"/tasks/{task_id}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] in statuses:
                return body
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_the_in_process_worker_runs_what_an_endpoint_enqueued(settings: Settings) -> None:
    omniq = new_app(settings)
    api = make_api(lifespan(omniq, worker=True, concurrency=2))
    async with serving(api) as client:
        assert api.state.omniq is omniq
        response = await client.post("/add", params={"a": 2, "b": 3})
        assert response.status_code == 200
        body = await wait_for(client, response.json()["task_id"], "succeeded", "failed")
    assert body == {"status": "succeeded", "result": 5}
    async with new_app(settings) as reader:
        assert await reader.list_workers() == [], "the pool unregistered at shutdown"


@pytest.mark.anyio
async def test_shutdown_lets_a_running_task_finish(settings: Settings) -> None:
    omniq = new_app(settings)
    async with serving(make_api(lifespan(omniq, worker=True))) as client:
        task_id = (await client.post("/nap", params={"seconds": 0.5})).json()["task_id"]
        await wait_for(client, task_id, "running")
    # The lifespan returned only once the task was done and recorded, and closed the app.
    async with new_app(settings) as reader:
        result = await reader.get_result(task_id)
    assert result is not None and result.ok and result.result == "rested"


@pytest.mark.anyio
async def test_what_outlives_stop_timeout_is_handed_back(tmp_path: Path) -> None:
    settings = Settings(backend="sqlite", base_dir=tmp_path / "data", poll_interval=0.2)
    omniq = new_app(settings)
    with anyio.fail_after(20):
        async with serving(make_api(lifespan(omniq, worker=True, stop_timeout=0.2))) as client:
            task_id = (await client.post("/nap", params={"seconds": 60})).json()["task_id"]
            await wait_for(client, task_id, "running")
    async with new_app(settings) as reader:
        task = await reader.get_task(task_id)
    assert task is not None and task.status is TaskStatus.PENDING, "released for another worker, not lost"


@pytest.mark.anyio
async def test_your_lifespan_runs_inside_with_the_app_connected(tmp_path: Path) -> None:
    settings = Settings(backend="sqlite", base_dir=tmp_path / "data", poll_interval=0.2)
    omniq = new_app(settings)
    enqueued: dict[str, str] = {}

    @asynccontextmanager
    async def mine(api: FastAPI) -> AsyncIterator[dict[str, Any]]:
        enqueued["startup"] = await omniq.enqueue("add", 1, 1)  # connected before your startup
        yield {"greeting": "hello"}  # the lifespan's state: request.state in every request
        enqueued["shutdown"] = await omniq.enqueue("add", 2, 2)  # and still connected during your shutdown

    async with serving(make_api(lifespan(omniq, inner=mine, worker=True))) as client:
        assert (await client.get("/state")).json() == {"greeting": "hello"}
        assert (await wait_for(client, enqueued["startup"], "succeeded"))["result"] == 2
    async with new_app(settings) as reader:
        task = await reader.get_task(enqueued["shutdown"])
    assert task is not None and task.status is TaskStatus.PENDING  # the worker had stopped: it waits for the next


@pytest.mark.anyio
async def test_running_in_your_own_lifespan_with_an_omniq_worker_process(
    app_env: dict[str, str], start_worker: Start
) -> None:
    omniq = new_app(Settings(backend="sqlite", base_dir=Path(app_env["OMNIQ_BASE_DIR"]), poll_interval=0.2))

    @asynccontextmanager
    async def mine(api: FastAPI) -> AsyncIterator[None]:
        async with running(omniq, api):
            yield

    start_worker()  # omniq worker contribapp:app, on the same SQLite store; it registers "add" too
    async with serving(make_api(mine)) as client:
        task_id = (await client.post("/add", params={"a": 20, "b": 22})).json()["task_id"]
        body = await wait_for(client, task_id, "succeeded", "failed", timeout=60)
    assert body == {"status": "succeeded", "result": 42}


@pytest.mark.anyio
async def test_the_dependency_without_the_lifespan_says_what_is_missing() -> None:
    api = make_api(None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as client:
        with pytest.raises(RuntimeError, match=r"no OmniQ app on this FastAPI app: .*lifespan"):
            await client.post("/add", params={"a": 1, "b": 2})


@pytest.mark.anyio
async def test_a_sync_omniq_is_refused(tmp_path: Path) -> None:
    sync_app = OmniQ(backend="memory")
    try:
        with pytest.raises(TypeError, match="expected an AsyncOmniQ, got OmniQ"):
            async with serving(make_api(lifespan(sync_app))):  # type: ignore[arg-type]
                pass
    finally:
        sync_app.close()


@pytest.mark.anyio
async def test_a_bad_worker_option_fails_the_startup(tmp_path: Path) -> None:
    api = make_api(lifespan(new_app(Settings(backend="sqlite", base_dir=tmp_path)), worker=True, pool="fibers"))
    with pytest.raises(ConfigurationError, match="pool='fibers'"):
        async with serving(api):
            pass
    assert not hasattr(api.state, "omniq")


def test_importing_it_without_fastapi_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # what an environment without FastAPI looks like to import
    monkeypatch.delitem(sys.modules, "omniq.contrib.fastapi")
    with pytest.raises(ImportError, match=r"pip install './packages/omniq-core\[fastapi\]'"):
        importlib.import_module("omniq.contrib.fastapi")
