"""The dashboard's pages and actions in process (httpx over ASGI, a memory backend): content,
escaping, CSRF, auth, read-only mode and the loopback-host rule."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from omniq import AsyncOmniQ, TaskStatus
from omniq.dashboard import Credentials, DashboardConfig, create_app
from omniq.monitoring import page_cursor
from tests.dashboard.conftest import CSRF_INPUT

pytestmark = pytest.mark.anyio

HOSTILE = "<script>alert('x')</script>&\"quotes\""


@asynccontextmanager
async def client(
    app: AsyncOmniQ, config: DashboardConfig | None = None, base_url: str = "http://127.0.0.1:8765"
) -> AsyncIterator[httpx.AsyncClient]:
    config = config or DashboardConfig(manage_app=False)
    web = create_app(app, config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url=base_url) as http:
        yield http


async def failed_task(app: AsyncOmniQ, value: str = "x") -> str:
    task_id = await app.enqueue("boom", value)
    await app.run_worker(1, burst=True)
    task = await app.get_task(task_id)
    assert task is not None and task.status is TaskStatus.FAILED
    return task_id


async def token_of(http: httpx.AsyncClient, path: str) -> str:
    """The CSRF token of a page (the client keeps the session cookie)."""
    page = await http.get(path)
    found = CSRF_INPUT.search(page.text)
    assert found is not None, page.text
    return found.group(1)


async def test_every_page_answers_and_shows_the_queue(omniq_app: AsyncOmniQ) -> None:
    await failed_task(omniq_app)
    await omniq_app.enqueue("echo", "hi", queue="other")
    async with client(omniq_app) as http:
        for path in (
            "/",
            "/tasks",
            "/workers",
            "/schedules",
            "/purge",
            "/static/dashboard.css",
            "/static/dashboard.js",
        ):
            response = await http.get(path)
            assert response.status_code == 200, path
        overview = (await http.get("/")).text
        assert "<svg" in overview and "completed in the last hour" in overview
        assert 'href="/tasks?queue=other"' in overview and 'href="/tasks?queue=default&amp;status=failed"' in overview
        assert (await http.get("/tasks/unknown-id")).status_code == 404
        assert (await http.get("/no/such/page")).status_code == 404


async def test_the_task_page_shows_arguments_error_traceback_and_events(omniq_app: AsyncOmniQ) -> None:
    task_id = await failed_task(omniq_app, "seven")
    async with client(omniq_app) as http:
        page = (await http.get(f"/tasks/{task_id}")).text
    assert "boom(&#39;seven&#39;)" in page
    assert "ValueError" in page and "boom: seven" in page and "Traceback" in page
    assert "1 of 1" in page  # attempts
    assert all(event in page for event in ("enqueued", "started", "failed"))
    assert re.search(r"<button[^>]*>Retry</button>", page) and ">Cancel</button>" not in page


async def test_user_data_is_escaped_everywhere(omniq_app: AsyncOmniQ) -> None:
    task_id = await failed_task(omniq_app, HOSTILE)
    await omniq_app.enqueue("echo", HOSTILE, queue="<b>q</b>")
    async with client(omniq_app) as http:
        pages = [(await http.get(path)).text for path in ("/", "/tasks", f"/tasks/{task_id}", "/purge")]
        pages.append((await http.get("/tasks", params={"queue": HOSTILE, "name": HOSTILE})).text)
    for page in pages:
        assert "<script>alert" not in page and "<b>q</b>" not in page
    assert "&lt;script&gt;alert(" in pages[2]


async def test_the_task_list_filters_and_pages_by_cursor(omniq_app: AsyncOmniQ) -> None:
    from omniq.dashboard.data import PAGE_SIZE

    ids = [await omniq_app.enqueue("echo", str(n)) for n in range(PAGE_SIZE + 3)]
    other = await omniq_app.enqueue("boom", "other", queue="elsewhere")
    async with client(omniq_app) as http:
        first = (await http.get("/tasks", params={"name": "echo"})).text
        assert other not in first
        cursor = re.search(r'href="(/tasks\?[^"]*after=[^"]+)" rel="next"', first)
        assert cursor is not None
        second = (await http.get(cursor.group(1).replace("&amp;", "&"))).text
        shown = set(re.findall(r"/tasks/([0-9a-f]{32})\"", first + second))
        assert shown == set(ids)
        assert 'rel="next"' not in second
        only = (await http.get("/tasks", params={"queue": "elsewhere", "status": "pending"})).text
        assert other in only and ids[0] not in only
        bad = await http.get("/tasks", params={"after": "not-a-cursor"})
        assert bad.status_code == 200 and "not a page cursor" in bad.text
    task = await omniq_app.get_task(ids[0])
    assert task is not None and page_cursor(task.created_at, task.id)


async def test_retry_needs_the_session_token_and_then_runs_the_task_again(omniq_app: AsyncOmniQ) -> None:
    task_id = await failed_task(omniq_app)
    async with client(omniq_app) as http:
        token = await token_of(http, f"/tasks/{task_id}")
        assert (await http.post(f"/tasks/{task_id}/retry")).status_code == 403
        assert (await http.post(f"/tasks/{task_id}/retry", data={"csrf": "forged"})).status_code == 403
        stranger = httpx.AsyncClient(transport=http._transport, base_url="http://127.0.0.1:8765")
        async with stranger:  # a token without its session cookie
            assert (await stranger.post(f"/tasks/{task_id}/retry", data={"csrf": token})).status_code == 403
        cross = await http.post(
            f"/tasks/{task_id}/retry", data={"csrf": token}, headers={"Origin": "http://evil.example"}
        )
        assert cross.status_code == 403
        task = await omniq_app.get_task(task_id)
        assert task is not None and task.status is TaskStatus.FAILED
        done = await http.post(f"/tasks/{task_id}/retry", data={"csrf": token})
        assert done.status_code == 303 and done.headers["location"] == f"/tasks/{task_id}?notice=retried"
        task = await omniq_app.get_task(task_id)
        assert task is not None and task.status is TaskStatus.PENDING and task.attempts == 0
        page = (await http.get(done.headers["location"])).text
        assert "Retried" in page and ">Cancel</button>" in page
        again = await http.post(f"/tasks/{task_id}/retry", data={"csrf": token})
        assert again.headers["location"].endswith("notice=not-retried")


async def test_cancel_schedules_and_purge_with_confirmation(omniq_app: AsyncOmniQ) -> None:
    pending = await omniq_app.enqueue("echo", "later")
    schedule = await omniq_app.enqueue("echo", "tick", interval=3600.0)
    async with client(omniq_app) as http:
        token = await token_of(http, "/schedules")
        cancelled = await http.post(f"/tasks/{pending}/cancel", data={"csrf": token})
        assert cancelled.headers["location"].endswith("notice=cancelled")
        assert (await http.post(f"/schedules/{schedule}/pause", data={"csrf": token})).status_code == 303
        assert ">Resume</button>" in (await http.get("/schedules")).text
        assert (await http.post(f"/schedules/{schedule}/resume", data={"csrf": token})).status_code == 303
        assert ">Pause</button>" in (await http.get("/schedules")).text
        assert (await http.post(f"/schedules/{schedule}/nonsense", data={"csrf": token})).status_code == 404
        ask = await http.post("/purge", data={"csrf": token, "status": "cancelled"})
        assert ask.status_code == 200 and "Delete 1 task(s) with status cancelled?" in ask.text
        assert await omniq_app.get_task(pending) is not None  # asking deleted nothing
        done = await http.post("/purge", data={"csrf": token, "status": "cancelled", "confirmed": "yes"})
        assert done.headers["location"] == "/?notice=purged&purged=1"
        assert "Purged 1 task(s)." in (await http.get(done.headers["location"])).text
    assert await omniq_app.get_task(pending) is None
    assert await omniq_app.get_task(schedule) is not None


async def test_read_only_hides_actions_and_refuses_posts(omniq_app: AsyncOmniQ) -> None:
    task_id = await failed_task(omniq_app)
    await omniq_app.enqueue("echo", "tick", interval=3600.0)
    async with client(omniq_app, DashboardConfig(read_only=True, manage_app=False)) as http:
        pages = [(await http.get(path)).text for path in (f"/tasks/{task_id}", "/schedules", "/", "/purge")]
        for page in pages:
            assert "<button" not in page.replace(">Filter</button>", "")
        assert "read-only" in pages[2]
        response = await http.post(f"/tasks/{task_id}/retry", data={"csrf": "anything"})
        assert response.status_code == 403
    task = await omniq_app.get_task(task_id)
    assert task is not None and task.status is TaskStatus.FAILED


async def test_basic_auth_guards_every_path(omniq_app: AsyncOmniQ) -> None:
    config = DashboardConfig(credentials=Credentials.parse("admin:s3:cret"), manage_app=False)
    good = "Basic " + base64.b64encode(b"admin:s3:cret").decode()
    bad = "Basic " + base64.b64encode(b"admin:wrong").decode()
    async with client(omniq_app, config, base_url="http://dashboard.example:8765") as http:
        for path in ("/", "/tasks", "/static/dashboard.css", "/nope"):
            refused = await http.get(path)
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert (await http.get("/", headers={"Authorization": bad})).status_code == 401
        assert (await http.get("/", headers={"Authorization": "Basic !!!"})).status_code == 401
        allowed = await http.get("/", headers={"Authorization": good})
        assert allowed.status_code == 200  # any Host: the credentials guard it
        assert "s3:cret" not in repr(config)


async def test_without_auth_only_loopback_hosts_are_answered(omniq_app: AsyncOmniQ) -> None:
    async with client(omniq_app, base_url="http://rebound.example:8765") as http:
        assert (await http.get("/")).status_code == 421
    for base in ("http://localhost:8765", "http://[::1]:8765", "http://127.0.0.2"):
        async with client(omniq_app, base_url=base) as http:
            assert (await http.get("/")).status_code == 200, base
    insecure = DashboardConfig(loopback_hosts_only=False, manage_app=False)
    async with client(omniq_app, insecure, base_url="http://rebound.example:8765") as http:
        assert (await http.get("/")).status_code == 200


async def test_responses_carry_safe_headers_and_the_live_block(omniq_app: AsyncOmniQ) -> None:
    async with client(omniq_app) as http:
        page = await http.get("/")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        cookie = page.headers["set-cookie"].lower()
        assert "omniq_csrf=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        live = await http.get("/", headers={"X-OmniQ-Live": "1"})
        assert live.status_code == 200 and "<html" not in live.text and "<svg" in live.text


async def test_the_dashboard_names_its_backend_without_the_password() -> None:
    from omniq import Settings

    app = AsyncOmniQ(Settings(backend="memory", url="memory://user:hunter2@somewhere"))
    async with app, client(app) as http:
        page = (await http.get("/")).text
    assert "hunter2" not in page and "***" in page


async def test_a_huge_argument_is_clipped(omniq_app: AsyncOmniQ) -> None:
    from omniq.dashboard.data import SHOWN_CHARS

    task_id = await omniq_app.enqueue("echo", "y" * (SHOWN_CHARS * 2))
    async with client(omniq_app) as http:
        page = (await http.get(f"/tasks/{task_id}")).text
    assert "more characters)" in page and "y" * (SHOWN_CHARS * 2) not in page


def test_the_throughput_chart_scales_to_its_peak_and_labels_each_minute() -> None:
    from datetime import datetime, timezone

    from omniq.dashboard.charts import HEIGHT, throughput_chart

    now = datetime(2026, 1, 2, 3, 4, 30, tzinfo=timezone.utc)
    chart = throughput_chart([0] * 57 + [2, 4, 1], now)
    assert len(chart.bars) == 60 and chart.peak == 4 and chart.total == 7
    assert chart.bars[-2].height == HEIGHT - 2 and chart.bars[-1].height == (HEIGHT - 2) / 4
    assert chart.bars[0].height == 0 and chart.bars[0].label == "02:05 UTC: 0 completed"
    assert chart.bars[-1].label == "03:04 UTC: 1 completed"
    assert (chart.first, chart.last) == ("02:05", "03:04")
    assert chart.summary == "7 completed in the last hour, peak 4/min"
    assert throughput_chart([0] * 60, now).summary == "0 completed in the last hour"


async def test_no_page_shows_a_url_password_even_in_user_data(omniq_app: AsyncOmniQ) -> None:
    task_id = await failed_task(omniq_app, "redis://worker:hunter2@cache:6379/0")
    async with client(omniq_app) as http:
        page = (await http.get(f"/tasks/{task_id}")).text
        listing = (await http.get("/tasks")).text
    assert "hunter2" not in page and "hunter2" not in listing
    assert "redis://worker:***@cache:6379/0" in page


async def test_a_backend_error_is_a_page_that_keeps_polling() -> None:
    pytest.importorskip("omniq_redis")
    from omniq import Settings

    app = AsyncOmniQ(Settings(backend="redis", url="redis://:hunter2@127.0.0.1:1/0"))  # nothing listens there
    async with client(app) as http:
        page = await http.get("/")
    assert page.status_code == 503 and 'id="live"' in page.text
    assert "BackendUnavailableError" in page.text and "hunter2" not in page.text


async def test_metrics_are_served_only_when_asked(omniq_app: AsyncOmniQ) -> None:
    pytest.importorskip("prometheus_client")
    async with client(omniq_app) as http:
        assert (await http.get("/metrics")).status_code == 404
    async with client(omniq_app, DashboardConfig(manage_app=False, metrics=True)) as http:
        scraped = await http.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")


async def test_the_task_page_shows_a_running_tasks_progress_escaped(omniq_app: AsyncOmniQ) -> None:
    import anyio

    from omniq import report_progress

    release = anyio.Event()

    @omniq_app.task(name="dash.progress")
    async def export() -> None:
        report_progress(3, 10, HOSTILE)
        await release.wait()

    task_id = await export.enqueue()
    worker = omniq_app.worker(concurrency=1)
    async with anyio.create_task_group() as group:
        group.start_soon(worker.start)
        with anyio.fail_after(30):
            while (task := await omniq_app.get_task(task_id)) is None or task.progress is None:
                await anyio.sleep(0.05)
        async with client(omniq_app) as http:
            page = (await http.get(f"/tasks/{task_id}")).text
        release.set()
        await worker.stop()
    assert "3/10 (30%)" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
