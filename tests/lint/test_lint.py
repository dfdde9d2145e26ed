"""Lint and types: ruff's rules and formatting and mypy pass on the whole tree.

CI runs them through this test, so the README's test command (which CI runs) checks them too:
``ruff check .``, ``ruff format --check .`` and ``mypy`` (its files and strictness are set in
pyproject.toml). A venv without ruff or mypy (installed by the ``test`` extra) skips them,
except under CI (``CI`` set), where a missing tool fails.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: check -> (module run with ``python -m``, its arguments)
CHECKS = {
    "ruff check": ("ruff", ["check", "."]),
    "ruff format": ("ruff", ["format", "--check", "."]),
    "mypy": ("mypy", []),
}

pytestmark = pytest.mark.slow


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.mark.parametrize("check", list(CHECKS))
def test_the_tree_is_clean(check: str) -> None:
    module, args = CHECKS[check]
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed (pip install the 'test' extra)"
        if _under_ci():
            pytest.fail(f"{message}: CI runs every check")
        pytest.skip(message)
    # mypy takes one to two minutes without its cache on the 2-core box, well inside the per-test timeout.
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=280, check=False
    )
    assert proc.returncode == 0, (
        f"`{module} {' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
    )
