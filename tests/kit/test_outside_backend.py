"""A backend package outside the repository runs the conformance suite and the fault suite (issue 19).

The test writes ``omniq-acme`` into a temporary directory: an engine named ``acme`` (the file
engine under another name, with a trace of the processes that open it), registered through an
``omniq`` entry point of a ``.dist-info`` directory on ``PYTHONPATH`` (what ``pip install``
leaves), and a test module that uses only what docs/backends.md documents: the pytest plugin
(``-p omniq.testing.plugin`` in the package's own pytest configuration), the suites'
``task_queue_factory`` / ``fused_result_storage_factory`` / ``result_storage_factory`` /
``event_storage_factory`` fixtures and the fault suite's ``fault_env``. pytest runs there in a
fresh interpreter, outside this repository's configuration, every suite in full; the test counts
what ran from its JUnit report, and checks that worker processes other than pytest's opened the
``acme`` engine (the fault suite starts ``omniq worker`` processes, which find the backend through
its entry point as any installed backend is found).
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite
from omniq.testing.faults import FaultSuite

pytestmark = pytest.mark.slow

PACKAGE = {
    "pyproject.toml": """\
[project]
name = "omniq-acme"
version = "0.1"
dependencies = ["omniq-core"]

[project.entry-points.omniq]
acme = "omniq_acme.plugin"

[tool.pytest.ini_options]
addopts = ["-p", "omniq.testing.plugin"]
""",
    "src/omniq_acme-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: omniq-acme\nVersion: 0.1\n",
    "src/omniq_acme-0.1.dist-info/entry_points.txt": "[omniq]\nacme = omniq_acme.plugin\n",
    "src/omniq_acme/__init__.py": '''\
"""The Acme engine: classes exported lazily, so loading the entry point imports no engine code."""

from omniq.plugins import lazy_exports

__all__ = ["AcmeEventStorage", "AcmeResultStorage", "AcmeTaskQueue"]
__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "omniq_acme.components"))
''',
    "src/omniq_acme/plugin.py": """\
from omniq.hookspecs import BackendSpec, hookimpl


def _spec(cls):
    return [BackendSpec(name="acme", path=f"omniq_acme.components:{cls}", distribution="omniq-acme")]


@hookimpl
def omniq_task_queue_types():
    return _spec("AcmeTaskQueue")


@hookimpl
def omniq_result_storage_types():
    return _spec("AcmeResultStorage")


@hookimpl
def omniq_event_storage_types():
    return _spec("AcmeEventStorage")
""",
    "src/omniq_acme/components.py": '''\
"""Acme stores everything in a directory: the file engine's components, under their own name."""

import os

from omniq.backends.file import FileEventStorage, FileResultStorage, FileTaskQueue


def _trace():
    """Append this process's id to $ACME_TRACE: which processes opened the engine."""
    if os.environ.get("ACME_TRACE"):
        with open(os.environ["ACME_TRACE"], "a") as trace:
            trace.write(f"{os.getpid()}\\n")


class AcmeTaskQueue(FileTaskQueue):
    backend_name = "acme"

    async def connect(self):
        _trace()
        await super().connect()


class AcmeResultStorage(FileResultStorage):
    backend_name = "acme"


class AcmeEventStorage(FileEventStorage):
    backend_name = "acme"
''',
    "tests/test_acme.py": """\
import pytest

from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite
from omniq.testing.faults import FaultSuite
from omniq_acme import AcmeEventStorage, AcmeResultStorage, AcmeTaskQueue


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "acme")  # one private store per test


class TestAcmeTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, root):
        return lambda: AcmeTaskQueue(root)

    @pytest.fixture
    def fused_result_storage_factory(self, root):
        return lambda: AcmeResultStorage(root)


class TestAcmeResultStorage(ResultStorageSuite):
    @pytest.fixture
    def result_storage_factory(self, root):
        return lambda: AcmeResultStorage(root)


class TestAcmeEventStorage(EventStorageSuite):
    @pytest.fixture
    def event_storage_factory(self, root):
        return lambda: AcmeEventStorage(root)


class TestAcmeFaults(FaultSuite):
    @pytest.fixture
    def fault_env(self, tmp_path):
        return {"OMNIQ_BACKEND": "acme", "OMNIQ_BASE_DIR": str(tmp_path / "data")}
""",
}


#: why a test of the suites may skip on this backend: a capability the file engine lacks (or has, for a
#: test of what a backend without it does), a fixture the package leaves out (corrupt_record), a
#: per-process worker registry test, no TCP connection to drop.
SKIP_REASONS = (
    "lacks the",
    "has the",
    "provides no corrupt_record",
    "keeps its workers in the engine",
    "not reached over TCP",
)


def _outcomes(report: Path) -> tuple[dict[str, Counter[str]], list[str]]:
    """Per test class of the JUnit report, how many tests passed, failed, errored and skipped; the skip messages."""
    outcomes: dict[str, Counter[str]] = {}
    skips: list[str] = []
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child for child in case if child.tag in ("failure", "error", "skipped")]
        kind = kinds[0].tag if kinds else "passed"
        if kind == "skipped":
            skips.append(kinds[0].get("message", ""))
        outcomes.setdefault(case.get("classname", "").rsplit(".", 1)[-1], Counter())[kind] += 1
    return outcomes, skips


def _tests_of(suite: type) -> int:
    """How many test methods a suite class has (each runs at least once; parametrized ones more)."""
    return sum(1 for name in dir(suite) if name.startswith("test_"))


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """omniq-acme, written out and "installed" (its dist-info on PYTHONPATH): the directory to run pytest in."""
    root = tmp_path / "omniq-acme"
    for name, text in PACKAGE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _environment(package: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OMNIQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(package / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["ACME_TRACE"] = str(package / "trace.log")
    return env


def test_the_installed_backend_is_listed(package: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "omniq", "backends"],
        cwd=package,
        env=_environment(package),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert "acme" in listed.stdout and "omniq-acme" in listed.stdout, listed.stdout


def test_a_backend_outside_the_repository_passes_both_suites(package: Path) -> None:
    report = package / "report.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", "tests/test_acme.py"],
        cwd=package,
        env=_environment(package),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    outcomes, skips = _outcomes(report)
    suites = {
        "TestAcmeTaskQueue": TaskQueueSuite,
        "TestAcmeResultStorage": ResultStorageSuite,
        "TestAcmeEventStorage": EventStorageSuite,
        "TestAcmeFaults": FaultSuite,
    }
    assert set(outcomes) == set(suites), outcomes
    for name, suite in suites.items():
        counts = outcomes[name]
        assert counts["failure"] == counts["error"] == 0, (name, counts)
        assert counts["passed"] + counts["skipped"] >= _tests_of(suite), (name, counts)  # the whole suite ran
    assert [reason for reason in skips if not any(known in reason for known in SKIP_REASONS)] == [], skips
    # The fault suite: every test but the two dropped-connection ones (a directory has no TCP connection).
    assert outcomes["TestAcmeFaults"] == Counter(passed=_tests_of(FaultSuite) - 2, skipped=2), outcomes
    # Its workers, processes of their own, opened the acme engine, found through its entry point.
    pids = {int(line) for line in (package / "trace.log").read_text().split()}
    assert len(pids) >= 5, f"only {len(pids)} processes opened the acme engine"
