"""Every ```python block of the documentation (docs/**/*.md) runs: a renamed API breaks the build, not the reader.

The convention, for whoever writes a page:

* The ``python`` blocks of one page run in order, in one namespace (like a doctest session or a
  script cut in pieces), as one test per page (``test_page_runs[docs/how-to/retries.md]``), in a
  fresh interpreter whose working directory is a fresh temporary directory, with every ``OMNIQ_*``
  variable removed from the environment and ``OMNIQ_BASE_DIR`` set to that directory: the default
  engine is SQLite in a file there. Warnings are errors (``-W error``). A page must finish within
  120 seconds. Top-level ``await`` is allowed: the page's blocks share one event loop.
* ``<!-- not run: REASON -->`` on the line just before a fence: the block is not run (it needs a
  Kubernetes cluster, it serves until stopped, ...). The reason is required; a bare
  ``<!-- not run -->`` fails the page.
* ``<!-- needs: redis -->`` (or ``postgres``, ``nats``) on the line just before a fence: the block
  runs with ``OMNIQ_BACKEND`` and ``OMNIQ_URL`` set for that engine's server (the
  ``redis_url`` / ``postgres_url`` / ``nats_url`` fixtures of ``omniq.testing.plugin``) and
  ``OMNIQ_KEY_PREFIX`` set to a prefix of the page's own, deleted afterwards. Such a page is marked
  ``servers``; when the server does not answer, the blocks before the first one that needs it run
  and the page is then skipped (failed under ``OMNIQ_REQUIRE_SERVERS=1``, as every server test).
* Every ``python`` block compiles, run or not. Other fences (``sh``, ``console``, ``yaml``,
  ``toml``, ``ini``, ``text``, ``dockerfile``, ...) are not run. A marker before anything but a
  ``python`` fence, or not on the line just before one, fails the page.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import drop_redis_keys
from tests.docs.blocks import DOCS, ENGINES, ROOT, Block, MarkupError, blocks, pages
from tests.docs.run_page import DONE

RUNNER = Path(__file__).with_name("run_page.py")
#: the most a page may take, all its blocks together.
PAGE_TIMEOUT = 120


def _page_params() -> list[Any]:
    params = []
    for page in pages():
        try:
            found = blocks(page)
        except MarkupError:
            found = []  # the test reports it
        text = page.read_text(encoding="utf-8")
        if not found and "```" not in text:
            continue
        marks = [pytest.mark.servers] if any(block.needs for block in found) else []
        params.append(pytest.param(page, marks=marks, id=str(page.relative_to(ROOT))))
    return params


def test_the_docs_have_pages() -> None:
    assert (DOCS / "index.md").is_file(), "docs/index.md is missing: is the test run from a clone?"


def _compiled(block: Block) -> None:
    try:
        compile(block.source(), str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except SyntaxError as exc:
        pytest.fail(f"{block.page.relative_to(ROOT)}:{exc.lineno}: the python block does not compile: {exc.msg}")


def _environment(tmp_path: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OMNIQ_")}
    env["OMNIQ_BASE_DIR"] = str(tmp_path)
    return env


def _run(page: Path, runnable: list[Block], urls: dict[str, str], prefix: str, tmp_path: Path) -> None:
    spec = {
        "blocks": [
            {
                "where": block.where,
                "filename": str(block.page),
                "source": block.source(),
                "env": {"OMNIQ_BACKEND": block.needs, "OMNIQ_URL": urls[block.needs], "OMNIQ_KEY_PREFIX": prefix}
                if block.needs
                else {},
            }
            for block in runnable
        ]
    }
    process = subprocess.Popen(
        [sys.executable, "-W", "error", str(RUNNER)],
        cwd=tmp_path,
        env=_environment(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: whatever a block starts is ended with it
    )
    try:
        out, err = process.communicate(json.dumps(spec), timeout=PAGE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        last = [line for line in err.splitlines() if line.startswith("--- running ")][-1:]
        pytest.fail(f"{page.relative_to(ROOT)} did not finish within {PAGE_TIMEOUT} s ({' '.join(last)})\n{out}\n{err}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    ran = DONE.format(len(runnable)) in out.splitlines()
    assert process.returncode == 0 and ran, f"{page.relative_to(ROOT)} (exit {process.returncode}):\n{out}\n{err}"


def _drop(engine: str, url: str, prefix: str) -> None:
    """Delete what the page's blocks stored under ``prefix`` on ``engine``."""
    if engine == "redis":
        drop_redis_keys(url, prefix)
    elif engine == "postgres":
        import asyncpg

        async def drop_schema() -> None:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop_schema())
    elif engine == "nats":
        from omniq_nats import drop_prefix

        asyncio.run(drop_prefix(url, prefix))


def _server_url(request: pytest.FixtureRequest, engine: str) -> str | BaseException:
    """The URL of ``engine``'s server, or the skip its fixture raised (``OMNIQ_REQUIRE_SERVERS=1``: it fails)."""
    try:
        return str(request.getfixturevalue(ENGINES[engine]))
    except pytest.skip.Exception as exc:
        return exc


@pytest.mark.parametrize("page", _page_params())
def test_page_runs(page: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    try:
        found = blocks(page)
    except MarkupError as exc:
        pytest.fail(str(exc))
    for block in found:
        _compiled(block)
    runnable = [block for block in found if block.not_run is None]
    urls: dict[str, str] = {}
    unreachable: BaseException | None = None
    for engine in dict.fromkeys(block.needs for block in runnable if block.needs):
        url = _server_url(request, engine)
        if isinstance(url, str):
            urls[engine] = url
        else:
            unreachable = url
            runnable = runnable[: next((i for i, block in enumerate(runnable) if block.needs == engine), len(runnable))]
    prefix = f"docs_{uuid.uuid4().hex[:12]}"
    try:
        if runnable:
            _run(page, runnable, urls, prefix, tmp_path)
    finally:
        for engine, url in urls.items():
            _drop(engine, url, prefix)
    if unreachable is not None:
        raise unreachable
