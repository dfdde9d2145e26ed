"""Every script in examples/ runs, as a user would run it, on the embedded default (SQLite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.examples.test_web_examples import SERVED

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

#: script -> text its output must contain
EXPECTED = {
    "quickstart.py": [
        "backend: sqlite",
        "sums: [0, 2, 4, 6, 8]",
        "divide(1, 0): failed after 2 attempts (ZeroDivisionError)",
    ],
    "async_quickstart.py": ["hello world"],
    "schedules.py": ["paused after", "schedule: cancelled"],
    "worker_app.py": ["enqueued 10 tasks"],
    "limits.py": [
        "most exports at once per customer: {'acme': 2, 'globex': 2}",
        "25 API calls took at least 1 s at 20/s after a burst of 5: True",
        "paused queue: ['reports'] -> pending",
        "after resume_queue: succeeded",
    ],
    "workflows.py": [
        "chain: 3",
        "group: [[0, 1, 2], [10, 11, 12], [20, 21, 22]]",
        "chord: 15",
        "si: fetched (workflow True)",
        "failed: DependencyFailed",
    ],
}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["OMNIQ_BASE_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_every_example_is_covered() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED) | SERVED  # the web examples serve until stopped: test_web_examples.py runs them


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env=_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for text in EXPECTED[script]:
        assert text in run.stdout


def test_worker_app_drained_by_the_cli(tmp_path: Path) -> None:
    env = _env(tmp_path)
    produce = subprocess.run(
        [sys.executable, "-m", "examples.worker_app"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert produce.returncode == 0, produce.stderr
    drain = subprocess.run(
        [sys.executable, "-m", "omniq", "worker", "examples.worker_app:app", "--burst"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert drain.returncode == 0, drain.stderr
    assert "10 task(s) processed" in drain.stdout
    status = subprocess.run(
        [sys.executable, "-m", "omniq", "status", "--app", "examples.worker_app:app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert any(line.split() == ["succeeded", "10"] for line in status.stdout.splitlines())
