"""``omniq backends`` and ``omniq --version``: what is installed."""

from __future__ import annotations

import argparse
from typing import Any

from omniq.cli.output import emit, emit_json, table
from omniq.errors import OmniQError

__all__ = ["VersionAction", "register", "versions"]


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def versions() -> list[tuple[str, str]]:
    """(distribution, version) of omniq-core and of every installed backend distribution."""
    from omniq.plugins import installed_backends

    names = ["omniq-core", *sorted({spec.distribution for _, spec in installed_backends()} - {"omniq-core"})]
    return [(name, _version(name)) for name in names]


class VersionAction(argparse.Action):
    """``--version``: the versions are looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions of omniq-core and the backends")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        """Print the versions and exit."""
        emit("\n".join(f"{name} {ver}" for name, ver in versions()))
        parser.exit()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``backends`` to the command's subparsers."""
    command = sub.add_parser("backends", help="list installed backends, component by component, with capabilities")
    command.add_argument("--json", action="store_true", help="print JSON")
    command.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print each installed backend component, its distribution, version and capabilities."""
    from omniq.plugins import backend_capabilities, installed_backends

    rows = []
    for component, spec in sorted(installed_backends(), key=lambda item: (item[1].name, item[0])):
        try:
            capabilities: list[str] | str = sorted(backend_capabilities(component, spec.name))
        except OmniQError as exc:  # a driver missing or broken: say so, list the rest
            capabilities = f"(does not import: {exc})"
        rows.append((spec.name, spec.distribution, _version(spec.distribution), component, capabilities))
    if args.json:
        keys = ("name", "distribution", "version", "component", "capabilities")
        emit_json([dict(zip(keys, row, strict=True)) for row in rows])
        return 0
    shown = [(*row[:4], ", ".join(row[4]) or "-" if isinstance(row[4], list) else row[4]) for row in rows]
    table(("name", "distribution", "version", "component", "capabilities"), shown)
    return 0
