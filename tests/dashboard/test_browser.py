"""The dashboard in a real browser: ``omniq dashboard`` and ``omniq worker`` as processes on one
SQLite file, Debian's chromium driven by playwright. A task fails, Retry in the browser runs it
again and the page shows it succeed; a schedule is paused and resumed; a purge asks before it deletes.

Skipped with a reason when chromium or playwright is missing, except under CI (``CI`` set), where
.ci/run installs both and a missing one fails. The overview's screenshot is saved with the test's
files; with ``OMNIQ_UPDATE_SCREENSHOTS=1`` it also replaces docs/images/dashboard.png (the README's).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ, Settings, TaskStatus
from tests.dashboard.conftest import require, under_ci
from tests.dashboard.servers import Process, dashboard_env, free_port, http_get

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "dashboard.png"
WAIT_MS = 30_000

FLAKY_APP = """\
from pathlib import Path

from omniq import OmniQ

app = OmniQ()


@app.task(name="flaky", max_retries=0)
def flaky(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError(f"first run fails (marker {path.name} now written)")
    return "ok on the second run"


@app.task(name="resize_image")
def resize_image(name: str, width: int) -> dict:
    return {"name": name, "width": width}


@app.task(name="send_email", max_retries=0)
def send_email(to: str) -> None:
    if to.endswith("@invalid"):
        raise ConnectionError(f"mail server refused {to}")
"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if under_ci():
            pytest.fail(f"{message}: CI installs it (.ci/run)")
        pytest.skip(message)
    return path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, OmniQ, str]]:
    """Chromium's path, a worker and a dashboard process on one SQLite store, and an app on it."""
    require("starlette", "uvicorn", "jinja2", "playwright", why="the browser test needs omniq-core[dashboard]")
    executable = chromium()
    (tmp_path / "flaky.py").write_text(FLAKY_APP)
    env = dashboard_env(tmp_path)
    env.update(OMNIQ_POLL_INTERVAL="0.2", OMNIQ_HEARTBEAT_INTERVAL="1")
    port = free_port()
    omniq = [sys.executable, "-m", "omniq"]
    worker = Process([*omniq, "worker", "flaky:app", "--queues", "default,media,mail"], env, cwd=tmp_path)
    dashboard = Process([*omniq, "dashboard", "flaky:app", "--port", str(port), "--poll", "1"], env, cwd=tmp_path)
    with worker, dashboard, OmniQ(Settings(base_dir=tmp_path / "data")) as app:
        url = f"http://127.0.0.1:{port}"
        try:
            status, _ = http_get(f"{url}/", wait=60.0)
        except OSError:
            pytest.fail(f"the dashboard did not start:\n{dashboard.output}")
        assert status == 200, dashboard.output
        yield url, app, executable
        assert worker.alive(), worker.output
        assert dashboard.alive(), dashboard.output


def wait_status(app: OmniQ, task_id: str, status: TaskStatus, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        task = app.get_task(task_id)
        if task is not None and task.status is status:
            return
        assert time.monotonic() < deadline, f"task {task_id} is {task and task.status}, not {status}"
        time.sleep(0.1)


def test_retry_in_the_browser_runs_a_failed_task_again(stack: tuple[str, OmniQ, str], tmp_path: Path) -> None:
    url, app, executable = stack
    sync_api: Any = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect

    # enqueued by name: this app has not registered the tasks, so the options are given here
    failing = app.enqueue("flaky", str(tmp_path / "marker"), max_retries=0)
    for n in range(12):
        app.enqueue("resize_image", f"photo-{n}.jpg", 640 + n, queue="media")
    app.enqueue("send_email", "ops@invalid", queue="mail", max_retries=0)
    app.enqueue("send_email", "team@example.org", queue="mail")
    schedule = app.enqueue("resize_image", "nightly.jpg", 1024, queue="media", interval=3600.0)
    wait_status(app, failing, TaskStatus.FAILED)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{url}/tasks?status=failed")
            page.get_by_role("link", name=failing).click()
            expect(page.get_by_role("heading", name=f"Task {failing}")).to_be_visible()
            expect(page.locator(".task-head .status")).to_have_text("failed")
            expect(page.locator("p.error")).to_contain_text("RuntimeError: first run fails")
            expect(page.locator("pre.traceback")).to_contain_text("Traceback (most recent call last)")
            page.get_by_role("button", name="Retry", exact=True).click()
            expect(page.get_by_role("status")).to_contain_text("Retried")
            # the live refresh shows the worker's second run without a reload
            expect(page.locator(".task-head .status")).to_have_text("succeeded", timeout=WAIT_MS)
            expect(page.get_by_text("'ok on the second run'")).to_be_visible(timeout=WAIT_MS)
            expect(page.locator(".timeline")).to_contain_text("requeued")

            page.goto(f"{url}/schedules")
            row = page.get_by_role("row").filter(has_text=schedule)
            row.get_by_role("button", name="Pause", exact=True).click()
            expect(row.get_by_role("button", name="Resume", exact=True)).to_be_visible()
            row.get_by_role("button", name="Resume", exact=True).click()
            expect(row.get_by_role("button", name="Pause", exact=True)).to_be_visible()

            page.goto(f"{url}/workers")
            expect(page.get_by_role("heading", name="Workers")).to_be_visible()

            page.goto(f"{url}/")
            expect(page.get_by_role("row").filter(has_text="media")).to_be_visible()
            expect(page.get_by_role("img", name="completed in the last hour").first).to_be_visible()
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("OMNIQ_UPDATE_SCREENSHOTS"):
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, SCREENSHOT)

            page.goto(f"{url}/purge")
            page.get_by_role("checkbox", name="failed").check()
            page.get_by_role("button", name="Purge", exact=True).click()
            expect(page.get_by_role("alert")).to_contain_text("Delete 1 task(s) with status failed?")
            assert app.count_tasks("failed") == 1  # asking deleted nothing
            page.get_by_role("button", name="Purge", exact=True).click()
            expect(page.get_by_role("status")).to_contain_text("Purged 1 task(s).")
            assert app.count_tasks("failed") == 0
        finally:
            browser.close()
