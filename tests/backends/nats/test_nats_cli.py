"""The omniq command on NATS, in subprocesses as users run it: a normal exit is a quiet one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from omniq import AsyncOmniQ, Settings

pytestmark = pytest.mark.anyio

APP = """\
from omniq import OmniQ

app = OmniQ()


@app.task(name="add")
def add(a: int, b: int) -> int:
    return a + b
"""

#: a log line at INFO or above from the NATS backend about its connection.
CONNECTION_LOG = re.compile(r"(INFO|WARNING|ERROR|CRITICAL)\s+omniq\.nats: .*connection", re.IGNORECASE)


def omniq(*args: str, env: dict[str, str], cwd: Path) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "omniq", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    return output


async def test_cli_commands_exit_without_connection_warnings(nats_url: str, prefix: str, tmp_path: Path) -> None:
    (tmp_path / "natsapp.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env |= {"OMNIQ_BACKEND": "nats", "OMNIQ_URL": nats_url, "OMNIQ_KEY_PREFIX": prefix, "OMNIQ_LOG_LEVEL": "INFO"}
    async with AsyncOmniQ(Settings(backend="nats", url=nats_url, key_prefix=prefix)) as app:
        task_id = await app.enqueue("add", 1, 2)
    outputs = {
        "status": omniq("status", env=env, cwd=tmp_path),
        "worker": omniq("worker", "natsapp:app", "--burst", env=env, cwd=tmp_path),
        "inspect": omniq("inspect", task_id, env=env, cwd=tmp_path),
    }
    assert "1 task(s) processed" in outputs["worker"]
    assert "succeeded" in outputs["inspect"]
    for command, output in outputs.items():
        assert not CONNECTION_LOG.search(output), f"omniq {command}:\n{output}"
