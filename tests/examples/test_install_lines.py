"""Every install command users are shown works as written, and none asks a package index for OmniQ.

OmniQ's distributions are not on a package index, and an unrelated project is
published on PyPI as ``omniq``: a command that names ``omniq`` (or any
``omniq-*`` distribution) by name instead of by path installs that project, or
nothing. So every command names each local package by its path, in one call.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from omniq.plugins import KNOWN_BACKENDS, install_command

ROOT = Path(__file__).resolve().parents[2]

#: ``pip install`` and what follows it, up to the end of a code span, a line, a shell ``&&`` or a comment.
PIP_INSTALL = re.compile(r"pip install\b([^`\n]*)")

#: the texts users read (the README, docs, package READMEs) and the sources of the messages they get.
DOCS = ["README.md", "docs/**/*.md", "packages/*/README.md"]
SOURCES = ["packages/*/src/**/*.py"]


def install_commands(text: str) -> list[str]:
    """The arguments of every ``pip install`` command in ``text``, one string each."""
    found = []
    for match in PIP_INSTALL.finditer(text):
        args = re.split(r"&&|\s#", match.group(1))[0].strip()
        if args:
            found.append(args)
    return found


def registry_names(args: str) -> list[str]:
    """The OmniQ distributions ``args`` would look up on a package index (named, not given by path)."""
    names = []
    for token in args.split():
        token = token.strip("'\"(),;")
        if token and not token.startswith("-") and "omniq" in token.lower() and "/" not in token:
            names.append(token)
    return names


def _files(patterns: list[str]) -> list[Path]:
    return sorted({path for pattern in patterns for path in ROOT.glob(pattern) if ".venv" not in path.parts})


def test_no_install_command_shown_to_users_asks_an_index_for_omniq() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: pip install {args}"
        for path in _files(DOCS + SOURCES)
        for args in install_commands(path.read_text())
        if registry_names(args)
    ]
    # the hint for an uninstalled first-party backend is built, not written out: check what it builds
    for distribution in sorted(set(KNOWN_BACKENDS.values())):
        command = install_command(distribution)
        if registry_names(command.removeprefix("pip install")) or "./packages/omniq-core" not in command:
            offenders.append(f"omniq.plugins.install_command({distribution!r}): {command}")
    assert offenders == []


def test_the_check_itself_catches_index_installs() -> None:
    # the offending lines are assembled, so that no file of the repository writes one out
    pip = "pip" + " install"
    text = f"run `{pip} 'omniq[redis]'` or\n```sh\n{pip} omniq-redis && omniq status\n```"
    assert [registry_names(args) for args in install_commands(text)] == [["omniq[redis]"], ["omniq-redis"]]
    assert registry_names("-e ./packages/omniq-core './packages/omniq-core[file]' -e .") == []


def _backends_named(args: str) -> set[str]:
    """The backend names a command installs (by path), as ``omniq backends`` lists them."""
    names = set(re.findall(r"packages/omniq-(\w+)", args)) - {"core"}
    if "omniq-core[file]" in args:
        names.add("file")
    return names


def _copy_of_the_tree(target: Path) -> Path:
    """What an install reads from a clone: the root project and every package (this tree's files)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", "build", "dist")
    shutil.copytree(ROOT / "packages", target / "packages", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    return target


def _install_and_check(args: str, workdir: Path) -> str:
    """Run ``pip install <args>`` in a fresh venv from a copy of the tree; return what went wrong ('' if nothing)."""
    clone = _copy_of_the_tree(workdir / "clone")
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", *shlex.split(args)],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if pip.returncode != 0:
        return f"pip install {args} failed:\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}"
    backends = sorted(_backends_named(args))
    check = (
        "import importlib.metadata as md, omniq.cli\n"
        "from omniq.plugins import resolve_backend\n"
        f"for name in {backends!r}:\n"
        "    resolve_backend('task_queue', name)  # imports the backend and its driver\n"
        "names = {d.metadata['Name'].lower(): d.version for d in md.distributions()}\n"
        "assert 'ulid-py' not in names, names\n"
        "assert names.get('omniq', '0.1.0') == '0.1.0', names  # only this tree's meta-distribution\n"
    )
    run = subprocess.run([str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        return f"after pip install {args}: {run.stderr[-3000:]}"
    version = subprocess.run([str(venv / "bin" / "omniq"), "--version"], capture_output=True, text=True, timeout=120)
    listed = {line.split()[0] for line in version.stdout.splitlines() if line.strip()}
    expected = {"omniq-core", *(KNOWN_BACKENDS[name] for name in backends)}
    if version.returncode != 0 or not expected <= listed:
        return f"after pip install {args}: omniq --version printed {version.stdout!r} {version.stderr[-2000:]!r}"
    return ""


@pytest.mark.slow
@pytest.mark.timeout(1200)  # seven fresh venvs; about 90 s on an idle machine, several minutes on a busy one
def test_every_readme_install_line_works_in_a_fresh_venv(tmp_path: Path) -> None:
    commands = list(dict.fromkeys(install_commands((ROOT / "README.md").read_text())))
    assert len(commands) >= 5  # the demo and test commands, the default install, and a line per server backend
    with ThreadPoolExecutor(max_workers=3) as pool:
        problems = list(
            pool.map(lambda item: _install_and_check(item[1], tmp_path / str(item[0])), enumerate(commands))
        )
    assert [p for p in problems if p] == []
