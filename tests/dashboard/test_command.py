"""``omniq dashboard`` as a command: the exposure rule, the install hint, a real server answering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.dashboard.conftest import require
from tests.dashboard.servers import Process, dashboard_env, free_port, http_get


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omniq", "dashboard", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_network_address_needs_auth_or_insecure(tmp_path: Path) -> None:
    require("starlette", "uvicorn", "jinja2", why="the command needs omniq-core[dashboard]")
    env = dashboard_env(tmp_path)
    refused = run("--host", "0.0.0.0", env=env)
    assert refused.returncode == 2
    assert "--auth USER:PASSWORD" in refused.stderr and "--insecure" in refused.stderr
    bad = run("--host", "0.0.0.0", "--auth", "nopassword", env=env)
    assert bad.returncode == 2 and "USER:PASSWORD" in bad.stderr


def test_without_the_extra_the_error_names_the_install_command(tmp_path: Path) -> None:
    code = "import sys; sys.modules['starlette'] = None; from omniq.cli import main; sys.exit(main(['dashboard']))"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=dashboard_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "starlette" in proc.stderr and "./packages/omniq-core[dashboard]" in proc.stderr


def test_the_server_answers_with_auth_from_the_environment_and_logs_no_password(tmp_path: Path) -> None:
    require("starlette", "uvicorn", "jinja2", why="the command needs omniq-core[dashboard]")
    port = free_port()
    env = {**dashboard_env(tmp_path), "OMNIQ_DASHBOARD_AUTH": "ops:pa55word"}
    env.update(OMNIQ_BACKEND="memory", OMNIQ_URL="memory://user:dbsecret@shown")
    with Process([sys.executable, "-m", "omniq", "dashboard", "--port", str(port), "--read-only"], env) as server:
        status, _ = http_get(f"http://127.0.0.1:{port}/", wait=30.0)
        assert status == 401
        status, body = http_get(f"http://127.0.0.1:{port}/", auth=("ops", "pa55word"))
        assert status == 200 and "read-only" in body
        assert "dbsecret" not in body
    assert "pa55word" not in server.output and "dbsecret" not in server.output
    assert f"http://127.0.0.1:{port}/" in server.output


def test_the_server_serves_metrics_with_the_queue_depth(tmp_path: Path) -> None:
    require("starlette", "uvicorn", "jinja2", why="the command needs omniq-core[dashboard]")
    pytest.importorskip("prometheus_client")
    from omniq import OmniQ, Settings

    with OmniQ(Settings(base_dir=tmp_path / "data")) as app:
        app.enqueue("anything", queue="reports")
    port = free_port()
    env = dashboard_env(tmp_path)
    with Process([sys.executable, "-m", "omniq", "dashboard", "--port", str(port)], env) as server:
        status, body = http_get(f"http://127.0.0.1:{port}/metrics", wait=30.0)
        assert status == 200, server.output
        assert 'omniq_queue_depth{queue="reports",status="pending"} 1.0' in body
    assert "/metrics" in server.output
    with Process([sys.executable, "-m", "omniq", "dashboard", "--port", str(port), "--no-metrics"], env):
        status, _ = http_get(f"http://127.0.0.1:{port}/metrics", wait=30.0)
        assert status == 404
