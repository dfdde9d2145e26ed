"""A griffe extension: the reST markup of OmniQ's docstrings, read as Markdown by mkdocstrings.

The docstrings are Google style (sections) with a few reST habits: roles such as
``:class:`~omniq.errors.OmniQError``` and ``:meth:`Settings.load```, and literal blocks
introduced by a paragraph ending in ``::``. A role becomes a code span (its target's last
part with ``~``, as Sphinx shows it; its whole target otherwise), and ``text::`` before an
indented block becomes ``text:``. Double backticks are already a Markdown code span.
Loaded by mkdocs.yml (mkdocstrings' python handler, ``extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: ``:role:`target``` or ``:domain:role:`~target``` (the text in backticks has no backtick).
ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`(~?)([^`]+)`")
#: a paragraph's last line ending in ``::`` (a reST literal block follows).
LITERAL_INTRO = re.compile(r"(?<=\S)::$", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def markdown(text: str) -> str:
    """``text`` with reST roles turned into code spans and ``::`` literal introductions into ``:``."""
    return LITERAL_INTRO.sub(":", ROLE.sub(_role, text))


class SphinxRoles(griffe.Extension):
    """Rewrite each object's docstring (once the tree is built) with :func:`markdown`."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s own docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
