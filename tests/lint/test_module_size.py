"""No source module grows past ~400 lines: split by concept before that (issue 14, STYLE.md)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the ceiling; a module near it is a sign to split by concept, not to trim comments.
MAX_LINES = 400


def test_no_source_module_is_over_the_ceiling() -> None:
    sources = sorted(ROOT.glob("packages/*/src/**/*.py"))
    assert sources, "no sources found: is the test run from a clone of the repository?"
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in sources
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines (split them by concept): {too_long}"
