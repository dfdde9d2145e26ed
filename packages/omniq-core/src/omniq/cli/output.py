"""How commands print: aligned columns for people, ``--json`` for programs, progress for long runs."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec

__all__ = ["emit", "emit_json", "progress", "shown", "table"]

T = TypeVar("T")


def emit(line: str = "") -> None:
    """One line of command output on stdout."""
    print(line)  # noqa: T201 - CLI output


def _default(value: Any) -> Any:
    return repr(value)  # arguments that JSON cannot hold (a set, an object) are shown, not lost


def emit_json(value: Any) -> None:
    """``value`` (Structs, enums, datetimes included) as one JSON document on stdout."""
    sys.stdout.write(msgspec.json.encode(value, enc_hook=_default).decode() + "\n")


def shown(value: Any) -> str:
    """A cell: enums by value, datetimes to the second in ISO form, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(getattr(value, "value", value))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Columns aligned to their widest cell."""
    cells = [[shown(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    for row in [list(headers), *cells]:
        emit("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def progress(items: Sequence[T], label: str) -> Iterator[T]:
    """Yield ``items``; on a terminal with rich installed show a bar, else a line per 10 % (stderr)."""
    total = len(items)
    if sys.stderr.isatty():
        try:  # optional: rich is not a dependency of omniq-core
            track = importlib.import_module("rich.progress").track
        except ImportError:
            pass
        else:
            yield from track(items, description=label, total=total, transient=True)
            return
    step = max(total // 10, 1)
    for done, item in enumerate(items, 1):
        yield item
        if done % step == 0 or done == total:
            print(f"{label}: {done}/{total}", file=sys.stderr)  # noqa: T201 - CLI progress
