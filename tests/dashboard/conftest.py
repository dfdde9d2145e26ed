"""Dashboard tests: the extra's modules are required under CI and skip with a reason elsewhere.

The web tests drive the ASGI app in process through httpx (no server); the
browser test (test_browser.py) runs ``omniq dashboard`` and a worker as real
processes and Debian's chromium through playwright.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from omniq import AsyncOmniQ, Settings


def under_ci() -> bool:
    """Whether CI runs us (``CI`` set), where a missing tool fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(*modules: str, why: str) -> None:
    """Skip (fail under CI) unless every module is importable."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        message = f"{', '.join(missing)} not installed: {why}"
        if under_ci():
            pytest.fail(f"{message} (CI installs it: .ci/run)")
        pytest.skip(message)


FAST: dict[str, Any] = {"poll_interval": 0.2, "sweep_interval": 0.2, "retry_backoff": 0.01, "retry_backoff_max": 0.05}

#: a CSRF hidden field in a page.
CSRF_INPUT = re.compile(r'name="csrf" value="([^"]+)"')


def make_app() -> AsyncOmniQ:
    """A fresh memory-backed app with two tasks: ``boom`` fails, ``echo`` returns its argument."""
    app = AsyncOmniQ(Settings(backend="memory", url=f"memory://{uuid.uuid4().hex}", **FAST))

    @app.task(name="boom", max_retries=0)
    def boom(value: str) -> None:
        raise ValueError(f"boom: {value}")

    @app.task(name="echo")
    def echo(value: str) -> str:
        return value

    return app


@pytest.fixture
async def omniq_app() -> AsyncIterator[AsyncOmniQ]:
    require("starlette", "jinja2", "httpx", why="the dashboard tests need omniq-core[dashboard] and httpx")
    app = make_app()
    async with app:
        yield app
