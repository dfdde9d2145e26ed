"""Real processes for the dashboard tests: a free port, the environment, a process that is always stopped."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["Process", "dashboard_env", "free_port", "http_get"]


def free_port() -> int:
    """A port nothing listens on now (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def dashboard_env(tmp_path: Path) -> dict[str, str]:
    """The environment without OMNIQ_ settings, an SQLite store under ``tmp_path`` and it on the path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMNIQ_")}
    env["OMNIQ_BASE_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Process:
    """A child process (output to a file) stopped by SIGTERM, then SIGKILL, when the block ends."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self._argv, self._env, self._cwd = argv, env, cwd
        self._log = (cwd or Path(env.get("OMNIQ_BASE_DIR", "."))).joinpath(f"process-{time.monotonic_ns()}.log")
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Process:
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with self._log.open("wb") as out:
            self._process = subprocess.Popen(
                self._argv, env=self._env, cwd=self._cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)

    @property
    def output(self) -> str:
        """What the process printed so far (stdout and stderr)."""
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self._process is not None and self._process.poll() is None


def http_get(url: str, *, auth: tuple[str, str] | None = None, wait: float = 0.0) -> tuple[int, str]:
    """``(status, body)`` of a GET; with ``wait``, retry a refused connection for that many seconds."""
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    deadline = time.monotonic() + wait
    while True:
        answer = _get(request)
        if answer is not None:
            return answer
        if time.monotonic() >= deadline:
            raise ConnectionRefusedError(f"nothing answers on {url}")
        time.sleep(0.2)


def _get(request: urllib.request.Request) -> tuple[int, str] | None:
    """``(status, body)``, or None when the connection is refused."""
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        raise
