"""The fenced code blocks of the documentation's pages, and the comments that say how to run them.

See test_code_blocks.py for the convention. A fence is three or more backticks or tildes, at any
indentation (blocks in lists, admonitions and tabs count); its language is the first word of its
info string. A marker comment must be the line just before a ``python`` fence.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: fence languages whose blocks run (any other fence is shown, not run).
PYTHON = {"python", "py", "python3"}
#: the engines a block may need, each with the URL fixture of omniq.testing.plugin that finds its server.
ENGINES = {"redis": "redis_url", "postgres": "postgres_url", "nats": "nats_url"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_COMMENT = re.compile(r"^\s*<!--\s*(?P<body>(?:not run|needs)\b.*?)\s*-->\s*$")
_NOT_RUN = re.compile(r"not run(?::\s*(?P<reason>.*))?", re.DOTALL)
_NEEDS = re.compile(r"needs:\s*(?P<engine>\S+)")


class MarkupError(ValueError):
    """A page's marker comment or fence is malformed (the message names the page and line)."""


@dataclasses.dataclass(frozen=True)
class Block:
    """One ``python`` block: where it starts, its code, and whether and how it runs."""

    page: Path
    #: the line number (1-based) of the block's first line of code.
    line: int
    code: str
    #: the reason of ``<!-- not run: reason -->``; None for a block that runs.
    not_run: str | None = None
    #: the engine of ``<!-- needs: engine -->``; None for the embedded default.
    needs: str | None = None

    @property
    def where(self) -> str:
        """``docs/page.md:LINE``."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def source(self) -> str:
        """The code, preceded by blank lines so that compiling it gives the page's line numbers."""
        return "\n" * (self.line - 1) + self.code


def pages() -> list[Path]:
    """Every Markdown page of the site (not the build's own code under docs/_hooks)."""
    return sorted(path for path in DOCS.rglob("*.md") if "_hooks" not in path.relative_to(DOCS).parts)


def _marker(page: Path, number: int, body: str) -> tuple[str | None, str | None]:
    """``(not_run, needs)`` of a marker comment's body."""
    where = f"{page.relative_to(ROOT)}:{number}"
    not_run = _NOT_RUN.fullmatch(body)
    if not_run:
        reason = (not_run["reason"] or "").strip()
        if not reason:
            raise MarkupError(f"{where}: '<!-- not run -->' needs a reason: '<!-- not run: why it cannot run -->'")
        return reason, None
    needs = _NEEDS.fullmatch(body)
    if needs and needs["engine"] in ENGINES:
        return None, needs["engine"]
    raise MarkupError(
        f"{where}: unknown marker '<!-- {body} -->': expected '<!-- not run: reason -->' "
        f"or '<!-- needs: ENGINE -->' with ENGINE one of {', '.join(ENGINES)}"
    )


def blocks(page: Path) -> list[Block]:
    """The ``python`` blocks of ``page``, in order, with their markers; MarkupError for a malformed one."""
    lines = page.read_text(encoding="utf-8").splitlines()
    where = page.relative_to(ROOT)
    found: list[Block] = []
    pending: tuple[int, str] | None = None  # a marker comment waiting for its fence on the next line
    number = 0
    while number < len(lines):
        text = lines[number]
        number += 1
        if pending is not None and pending[0] != number - 1:
            raise MarkupError(
                f"{where}:{pending[0]}: '<!-- {pending[1]} -->' is not on the line just before a python block"
            )
        comment = _COMMENT.match(text)
        if comment:
            if pending is not None:
                raise MarkupError(f"{where}:{pending[0]}: two marker comments in a row; give a block one")
            pending = (number, comment["body"])
            continue
        opening = _FENCE.match(text)
        if not opening:
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].split()[0].lower() if opening["info"].split() else ""
        start = number
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body: list[str] = []
        while number < len(lines) and not closing.match(lines[number]):
            body.append(lines[number])
            number += 1
        if number == len(lines):
            raise MarkupError(f"{where}:{start}: the {language or 'code'} block opened here is never closed")
        number += 1  # the closing fence
        marker = pending
        pending = None
        if language not in PYTHON:
            if marker is not None:
                raise MarkupError(
                    f"{where}:{marker[0]}: '<!-- {marker[1]} -->' is before a {language or 'plain'} block"
                )
            continue
        not_run, needs = _marker(page, marker[0], marker[1]) if marker is not None else (None, None)
        code = textwrap.dedent("\n".join(line[len(indent) :] if line.startswith(indent) else line for line in body))
        found.append(Block(page, start + 1, code + "\n", not_run=not_run, needs=needs))
    if pending is not None:
        raise MarkupError(
            f"{where}:{pending[0]}: '<!-- {pending[1]} -->' is not on the line just before a python block"
        )
    return found
