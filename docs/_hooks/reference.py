"""The mkdocs hook that writes the generated parts of the reference pages from the code itself.

A page asks for a part with a line of its own, ``<!-- generated: NAME -->``; the hook puts the
Markdown made by ``GENERATORS[NAME]`` in its place before the page is converted (so
mkdocstrings' ``:::`` lines in it are expanded too). Nothing generated is kept in the
repository, so nothing can drift from the code:

* ``settings-sources``, ``settings``, ``settings-other-variables``: :mod:`omniq.config`'s
  docstring (the precedence of the four sources), then one row per field of
  :class:`omniq.Settings` (name, ``OMNIQ_<NAME>``, type, default, and the meaning each field
  carries in its ``doc`` metadata, the one place the meanings are written), then the
  ``OMNIQ_*`` variables that are not settings (``omniq.config.NOT_SETTINGS``).
* ``cli``: every command, subcommand, argument and option of the ``omniq`` command, walked
  from its argparse parser (``omniq.cli._parser()``), with their help.
* ``events``: every :class:`omniq.EventType` member, with when it is recorded
  (``EVENT_MEANINGS`` below: the build fails when a member has no entry, or an entry no member).
* ``errors``, ``workflow-errors``: the class tree of :mod:`omniq.errors` (and of the workflow
  errors), found by introspection, then a mkdocstrings section per class.

A marker the hook does not know, or a generated part that no page asks for or that two pages
ask for, fails the build. Loaded by mkdocs.yml (``hooks:``); tests/docs/test_reference.py
checks the generators directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import inspect
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

#: a line of its own naming the part to generate there.
MARKER = re.compile(r"^<!-- generated: ([a-z][a-z-]*) -->$", re.MULTILINE)

#: when each event type is recorded (the build checks that these are exactly the enum's members).
EVENT_MEANINGS = {
    "ENQUEUED": "A task was stored, ready to run now (`enqueue`, `enqueue_many`, a workflow's members, "
    "a transactional enqueue whose events live in the same database).",
    "SCHEDULED": "A task was stored to run later: its `eta` (from `eta=`, `delay=`, or a schedule's first "
    "run) is in the future.",
    "STARTED": "A worker claimed the task and starts an attempt (`attempt` is its number, `worker_id` the worker).",
    "SUCCEEDED": "An attempt returned; its result is stored. A recurring task records one per run.",
    "FAILED": "The task failed for good: its attempts are used up, its error is not retried "
    "(`no_retry_on`, `TaskArgumentError`, an unknown task, a corrupted record, a failed dependency), "
    "or its lease expired with no attempt left (recorded by the worker that recovered it). A "
    "recurring task's failed run records one too.",
    "RETRYING": "An attempt raised and the task will run again: it is back to pending at the retry's "
    "`eta` (the message says when).",
    "CANCELLED": "`cancel` stopped a pending or running task (`app.cancel`, `omniq cancel`, the dashboard).",
    "EXPIRED": "A worker claimed the task after its `ttl` had passed: it ends without running.",
    "RELEASED": "A worker handed the task back to pending without counting the attempt: a graceful shutdown "
    "stopped it before it finished, or its dependencies have not finished yet (engines without "
    "`Capability.DEPENDENCIES`).",
    "RECOVERED": "A worker found the task's lease expired (its worker died or stalled) and put it back to "
    "pending, to run again.",
    "PAUSED": "`pause_schedule` (or `omniq schedules pause`) stopped a recurring task from being claimed.",
    "RESUMED": "`resume_schedule` made a paused recurring task claimable again.",
    "REQUEUED": "`retry` (`app.retry`, `omniq retry`, the dashboard) ran a FAILED, CANCELLED or EXPIRED "
    "task again with a fresh attempt budget (a worker's own retry is RETRYING).",
}

#: the width usage lines are wrapped at (the terminal's is not the site's).
USAGE_WIDTH = 88


# -- markdown helpers --------------------------------------------------------------------------------------

_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?([^`]+)`")
_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")


def from_rest(text: str) -> str:
    """A docstring's reST roles (``:class:`x```) as code spans; double backticks are Markdown already."""
    return _ROLE.sub(lambda match: f"`{match[1]}`", text)


def escaped(text: str) -> str:
    """``text`` shown as is in Markdown (and in a table cell)."""
    return _SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def code(text: str) -> str:
    """``text`` as a code span (the tables extension splits no cell at a ``|`` inside one)."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (cells are Markdown already)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- settings ----------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return ""


def _default(field: dataclasses.Field[Any]) -> str:
    """The field's default as one would write it in its ``OMNIQ_*`` variable, with a hint for sizes and durations."""
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = field.default
    hint = ""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, float):
        shown = f"{value:g}" if value < 1e6 else f"{value:.0f}"
        hint = _duration(value)
    elif isinstance(value, int):
        shown = str(value)
        if field.name.endswith("_size") and value % 1024**2 == 0:
            hint = f"{value // 1024**2} MiB"
    elif isinstance(value, tuple | list):
        if not value:
            return "empty"
        shown = ",".join(map(str, value))
    elif isinstance(value, dict):
        shown = "{}" if not value else repr(value)
    elif isinstance(value, enum.Enum):
        shown = str(value.value)
    else:
        shown = str(value)
    return code(shown) + (f" ({hint})" if hint else "")


def settings_sources() -> str:
    """The docstring of :mod:`omniq.config`: what sources settings come from, in which precedence."""
    from omniq import config

    text = inspect.getdoc(config) or ""
    return from_rest(text.split("\n\n", 1)[1] if "\n\n" in text else text)


def settings_table() -> str:
    """One row per field of :class:`omniq.Settings`."""
    from omniq.config import Settings

    rows = []
    for field in dataclasses.fields(Settings):
        meaning = field.metadata.get("doc")
        if not meaning:
            raise PluginError(f"omniq.Settings.{field.name} has no 'doc' metadata: its meaning is not documented")
        variable = f"OMNIQ_{field.name.upper()}"
        anchor = f'<span id="{field.name}"></span>'
        rows.append(
            [
                f"{anchor}{code(field.name)}<br>{code(variable)}",
                code(str(field.type)),
                _default(field),
                escaped_keeping_code(meaning),
            ]
        )
    return table(["Setting (YAML key)<br>Environment variable", "Type", "Default", "Meaning"], rows)


def escaped_keeping_code(text: str) -> str:
    """``text`` escaped for Markdown, except inside its code spans (which show as written)."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(part if part.startswith("`") else escaped(part) for part in parts)


def settings_other_variables() -> str:
    """The ``OMNIQ_*`` variables that are read but are not settings."""
    from omniq.config import NOT_SETTINGS, NOT_SETTINGS_PREFIXES

    names = [code(name) for name in NOT_SETTINGS] + [code(f"{prefix}*") for prefix in NOT_SETTINGS_PREFIXES]
    return ", ".join(names)


# -- the command line --------------------------------------------------------------------------------------


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=USAGE_WIDTH)


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, help, parser)`` of each subcommand of ``parser``, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                yield name, helps.get(name, ""), subparser


def _argument_name(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """How ``--help`` names the argument (``-c CONCURRENCY, --concurrency CONCURRENCY``, ``{pause,resume}``)."""
    return code(parser._get_formatter()._format_action_invocation(action))


def _argument_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    help_text = parser._get_formatter()._expand_help(action) if action.help else ""  # %(default)s and the like
    parts = [escaped(help_text)] if help_text else []
    if action.choices is not None and action.metavar is not None:  # else the name shows them: {a,b}
        parts.append("one of " + ", ".join(code(str(choice)) for choice in action.choices))
    if action.nargs in ("*", "+"):
        parts.append("several may be given")
    elif action.nargs == "?" and not action.option_strings:
        parts.append("optional")
    shown_default = action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0
    if shown_default and "default" not in help_text:
        parts.append(f"default {code(str(action.default))}")
    return "; ".join(parts) or "&nbsp;"


def _command_section(path: list[str], help_text: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    parser.formatter_class = _formatter
    name = " ".join(path)
    lines = [f"{'#' * level} `{name}`", ""]
    description = parser.description or help_text
    if description:
        lines += [escaped(description), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    rows = [
        [_argument_name(parser, action), _argument_help(parser, action)]
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and action.help != argparse.SUPPRESS
    ]
    if rows:
        lines += [table(["Argument", "Meaning"], rows), ""]
    for sub_name, sub_help, subparser in _subcommands(parser):
        lines += _command_section([*path, sub_name], sub_help, subparser, min(level + 1, 6))
    return lines


def cli_reference() -> str:
    """Every command of ``omniq``: its usage, then each argument and option with its help."""
    from omniq.cli import _parser

    parser = _parser()
    parser.formatter_class = _formatter
    lines = ["Options of `omniq` itself, given before the command:", ""]
    rows = [
        [_argument_name(parser, action), _argument_help(parser, action)]
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
    ]
    lines += [table(["Option", "Meaning"], rows), "", "```text", parser.format_usage().strip(), "```", ""]
    commands = list(_subcommands(parser))
    if not commands:
        raise PluginError("omniq.cli._parser() has no subcommands: the CLI reference would be empty")
    lines += ["Every command also takes `-h`/`--help`.", ""]
    for name, help_text, subparser in commands:
        lines += _command_section([parser.prog, name], help_text, subparser, 2)
    return "\n".join(lines)


# -- events and errors -------------------------------------------------------------------------------------


def events_table() -> str:
    """Every :class:`omniq.EventType`, with when it is recorded."""
    from omniq.models import EventType

    members = {member.name for member in EventType}
    missing, stale = sorted(members - set(EVENT_MEANINGS)), sorted(set(EVENT_MEANINGS) - members)
    if missing or stale:
        raise PluginError(
            f"docs/_hooks/reference.py EVENT_MEANINGS is out of date: no entry for {missing or 'none'}, "
            f"entries for no EventType member {stale or 'none'}"
        )
    rows = [
        [
            f'<span id="{member.value}"></span>{code(member.value)}',
            code(f"EventType.{member.name}"),
            EVENT_MEANINGS[member.name],
        ]
        for member in EventType
    ]
    return table(["Type (`TaskEvent.type`)", "Member", "Recorded when"], rows)


def _error_classes(module: Any) -> list[type[BaseException]]:
    """The exception classes defined in ``module``, in the order of its source."""
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == module.__name__
    ]
    return sorted(classes, key=lambda cls: inspect.getsourcelines(cls)[1])


def _error_tree(classes: list[type[BaseException]]) -> list[str]:
    """A nested list of ``classes`` under their nearest listed base, each linked to its section."""
    listed = set(classes)
    lines: list[str] = []

    def parent(cls: type[BaseException]) -> type[BaseException] | None:
        return next((base for base in cls.__mro__[1:] if base in listed), None)

    def add(cls: type[BaseException], depth: int) -> None:
        others = [base.__name__ for base in cls.__bases__ if base not in listed and base is not Exception]
        also = f" (also {', '.join(code(name) for name in others)})" if others else ""
        deprecated = ": deprecated, never raised" if (cls.__doc__ or "").startswith("Deprecated") else ""
        lines.append(f"{'    ' * depth}- [`{cls.__name__}`][{cls.__module__}.{cls.__qualname__}]{also}{deprecated}")
        for child in classes:
            if parent(child) is cls:
                add(child, depth + 1)

    for cls in classes:
        if parent(cls) is None:
            add(cls, 0)
    return lines


def _error_sections(module: Any) -> str:
    classes = _error_classes(module)
    if not classes:
        raise PluginError(f"{module.__name__} defines no exception class")
    lines = _error_tree(classes) + [""]
    for cls in classes:
        lines += [
            f"::: {cls.__module__}.{cls.__qualname__}",
            "    options:",
            "      show_root_full_path: false",
            "      heading_level: 3",
            "",
        ]
    return "\n".join(lines)


def errors_reference() -> str:
    """The class tree of :mod:`omniq.errors`, then each class's documentation."""
    from omniq import errors

    return _error_sections(errors)


def workflow_errors_reference() -> str:
    """The error classes of :mod:`omniq.workflows`."""
    from omniq import workflows

    return _error_sections(workflows)


# -- the hook ----------------------------------------------------------------------------------------------

GENERATORS: dict[str, Callable[[], str]] = {
    "settings-sources": settings_sources,
    "settings": settings_table,
    "settings-other-variables": settings_other_variables,
    "cli": cli_reference,
    "events": events_table,
    "errors": errors_reference,
    "workflow-errors": workflow_errors_reference,
}

_used: Counter[str] = Counter()


def on_pre_build(config: MkDocsConfig) -> None:
    """Start counting which generated parts the pages ask for."""
    _used.clear()


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Put each generated part in place of its marker."""

    def generated(match: re.Match[str]) -> str:
        name = match[1]
        if name not in GENERATORS:
            raise PluginError(
                f"{page.file.src_uri}: unknown generated part {name!r} (known: {', '.join(sorted(GENERATORS))})"
            )
        _used[name] += 1
        return GENERATORS[name]()

    return MARKER.sub(generated, markdown)


def on_env(env: Any, config: MkDocsConfig, files: Files) -> Any:
    """Fail the build when a generated part is asked for by no page, or by several."""
    unused = sorted(set(GENERATORS) - set(_used))
    repeated = sorted(name for name, count in _used.items() if count > 1)
    if unused or repeated:
        raise PluginError(
            f"generated parts used by no page: {unused or 'none'}; by several pages: {repeated or 'none'}"
        )
    return env
