"""The generated reference (docs/_hooks/reference.py) covers the whole of what it is generated from.

``mkdocs build --strict`` (CI) runs the hook on the pages; these check its generators directly, so
the suite alone catches a setting without a meaning, a command missing from the CLI reference, or
an event type nobody said when it is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
from types import ModuleType

import pytest

from omniq.cli import _parser
from omniq.config import Settings
from omniq.errors import OmniQError
from omniq.models import EventType
from tests.docs.blocks import DOCS


def _hook() -> ModuleType:
    path = DOCS / "_hooks" / "reference.py"
    spec = importlib.util.spec_from_file_location("omniq_docs_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hook() -> ModuleType:
    return _hook()


def test_every_setting_has_a_row_with_its_variable_and_meaning(hook: ModuleType) -> None:
    table = hook.settings_table()
    for field in dataclasses.fields(Settings):
        row = next(line for line in table.splitlines() if f'<span id="{field.name}"></span>' in line)
        assert f"`OMNIQ_{field.name.upper()}`" in row
        assert field.metadata["doc"].split("`")[0].strip() in row.replace("\\", "")
    assert len(table.splitlines()) == 2 + len(dataclasses.fields(Settings))  # the header, its rule, a row each


def test_a_setting_default_is_written_as_in_its_variable(hook: ModuleType) -> None:
    table = hook.settings_table()

    def row(name: str) -> str:
        return str(next(line for line in table.splitlines() if f'<span id="{name}"></span>' in line))

    assert "| `sqlite` |" in row("backend")
    assert "| `86400` (1 d) |" in row("result_ttl")
    assert "| `default` |" in row("queues")
    assert "| unset |" in row("url")
    assert "| `true` |" in row("events_enabled")
    assert "| `16777216` (16 MiB) |" in row("max_payload_size")


def _commands(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{path} {name}")
    return found


def test_every_command_and_option_is_in_the_cli_reference(hook: ModuleType) -> None:
    text = hook.cli_reference()
    commands = _commands(_parser(), "omniq")
    assert len(commands) > 10
    for path, _ in commands[1:]:
        assert f"## `{path}`" in text
    for _, parser in commands:
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in text, f"{option} of {parser.prog}"
            if action.help and action.help != argparse.SUPPRESS and "%(" not in action.help:
                assert hook.escaped(action.help) in text, action.help


def test_every_event_type_says_when_it_is_recorded(hook: ModuleType) -> None:
    assert set(hook.EVENT_MEANINGS) == {member.name for member in EventType}
    text = hook.events_table()
    for member in EventType:
        assert f"`EventType.{member.name}`" in text


def test_every_error_class_has_a_section(hook: ModuleType) -> None:
    from omniq import errors

    text = hook.errors_reference()
    classes = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, OmniQError)]
    assert len(classes) >= 12
    for cls in classes:
        assert f"::: omniq.errors.{cls.__name__}\n" in text
        assert f"[`{cls.__name__}`][omniq.errors.{cls.__name__}]" in text


def test_each_generated_part_is_asked_for_by_exactly_one_page(hook: ModuleType) -> None:
    asked = [
        match[1] for page in DOCS.rglob("*.md") for match in re.finditer(hook.MARKER, page.read_text(encoding="utf-8"))
    ]
    assert sorted(asked) == sorted(hook.GENERATORS)
