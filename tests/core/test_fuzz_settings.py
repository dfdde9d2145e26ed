"""Fuzzing settings parsing: only ConfigurationError (or settings) comes out, and never a password.

Random and mutated environments, YAML files and arguments in code, full of URLs
with passwords put in any setting, go through ``Settings.load``. Whatever
happens, the only exception is :class:`~omniq.errors.ConfigurationError`, and
no message, warning, repr or formatted traceback holds a password that
:func:`urllib.parse.urlsplit` finds in any of the inputs.

CI runs 100 inputs per test (a few seconds). A long run (the budget is per test; ``--timeout=0``
lifts the suite's 300 s per-test limit, ``--hypothesis-show-statistics`` counts the inputs tried)::

    OMNIQ_FUZZ_EXAMPLES=30000 .venv/bin/python -m pytest tests/core/test_fuzz_settings.py -q \
        --timeout=0 --hypothesis-show-statistics

120,000 inputs (30,000 per test) took about 25 minutes of wall time on the shared 2-core box.
"""

from __future__ import annotations

import string
import traceback
import urllib.parse
import warnings
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, strategies as st

from omniq import ConfigurationError
from omniq.config import COMPONENTS, Settings
from omniq.errors import redact_url
from tests.core.fuzzing import fuzz_settings

FUZZ = fuzz_settings(100, HealthCheck.filter_too_much)

FIELDS = Settings.field_names()
VARIABLES = tuple(f"OMNIQ_{name.upper()}" for name in FIELDS)
MARKER = "SECRET"  # every generated password starts with it, so a leak cannot be a coincidence

# -- inputs ----------------------------------------------------------------------------------------------------

_PASSWORD_CHARS = string.ascii_letters + string.digits + " @/:#?%!$&'()*+,;=._~-\t\n"
passwords = st.text(_PASSWORD_CHARS, max_size=12).map(lambda tail: MARKER + tail)
urls = st.builds(
    lambda scheme, user, password, host, tail: f"{scheme}://{user}:{password}@{host}{tail}",
    st.sampled_from(["redis", "rediss", "postgresql", "nats", "http", "file", "x+y"]),
    st.text(string.ascii_lowercase + "@._-", max_size=6),
    passwords,
    st.sampled_from(["h", "127.0.0.1:6379", "db.local:5432", "[::1]:4222", ""]),
    st.sampled_from(["", "/0", "/db?x=1", "/a@b", "#f", "?password=qpw&x=1"]),
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """``base`` with a few characters deleted, inserted or replaced, or cut short."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "cut"]))
        if op == "delete":
            text = text[:at] + text[at + 1 :]
        elif op == "insert":
            text = text[:at] + draw(st.sampled_from(list(":/@ \t\n'\"#[]{},&*!|>%\x00\\é"))) + text[at:]
        else:
            text = text[:at]
    return text


numbers = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**400, 315576000, 315576001]),
)
words = st.sampled_from(
    ["", " ", "none", "off", "true", "no", "memory", "redis", "json", "pickle", "DEBUG", "thread", "a,b", "5m", "1.5h"]
)
durations = st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**20), st.sampled_from(["", "ms", "s", "m", "h", "d"]))
text_values = st.one_of(
    urls,
    mutated(urls),
    st.builds(lambda a, u, b: f"{a}{u}{b}", st.text(max_size=5), urls, st.text(max_size=5)),  # a URL inside text
    st.builds(lambda u, v: f"{u},{v}", urls, urls),
    words,
    durations,
    numbers.map(str),
    st.text(max_size=20),
    st.builds(lambda u: '{"url": "%s", "n": [1]}' % u.replace("\\", "").replace('"', ""), urls),  # noqa: UP031
)
plain = st.one_of(text_values, numbers, st.booleans(), st.none())
yaml_values = st.recursive(
    plain, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(plain, inner, max_size=3)), max_leaves=8
)
code_values = st.one_of(
    yaml_values,
    st.builds(timedelta, seconds=st.floats(-1e9, 1e9)),
    st.builds(Path, st.text(max_size=10)),
    st.frozensets(st.text(max_size=3), max_size=2),
)
setting_names = st.one_of(st.sampled_from(FIELDS), mutated(st.sampled_from(FIELDS)))


# -- the property ----------------------------------------------------------------------------------------------


def secrets_in(values: Iterable[Any]) -> set[str]:
    """Every password urllib finds in the strings of ``values`` (nested in lists and dicts too), except
    one that some input also holds outside a password (a mutated URL cut down to its password, say)."""
    found: set[str] = set()
    elsewhere: list[str] = []
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack += [*value.keys(), *value.values()]
        elif isinstance(value, list | tuple | set | frozenset):
            stack += list(value)
        elif isinstance(value, str) and MARKER in value:
            try:
                password = urllib.parse.urlsplit(value).password
            except ValueError:  # urllib refuses some netlocs (a bad IPv6 literal): read it without brackets
                password = urllib.parse.urlsplit(value.replace("[", "").replace("]", "")).password
            if password and MARKER in password:
                found.add(password)
                value = value.replace(password, "", 1)
            elsewhere.append(value)
    return {secret for secret in found if not any(secret in text for text in elsewhere)}


def shown_text(make: Callable[[], Settings]) -> str:
    """Everything a user can see of building settings: the settings' reprs, or the error's message, repr and
    formatted traceback (with its chain), and every warning. Any exception but ConfigurationError escapes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            built = make()
        except ConfigurationError as exc:
            assert exc.args and str(exc), "a ConfigurationError says what is wrong"
            texts = [str(exc), repr(exc), *traceback.format_exception(type(exc), exc, exc.__traceback__)]
        else:
            texts = [repr(built), str(built), *(repr(built.component(name)) for name in COMPONENTS)]
    return "\n".join([*texts, *(str(w.message) for w in caught)])


def assert_no_secret(shown: str, inputs: Iterable[Any]) -> None:
    for secret in secrets_in(inputs):
        assert secret not in shown


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "omniq.yaml"


# -- the fuzz tests --------------------------------------------------------------------------------------------


@FUZZ
@given(
    env=st.dictionaries(
        st.one_of(st.sampled_from(VARIABLES), mutated(st.sampled_from(VARIABLES)), st.text(max_size=8)),
        st.one_of(text_values, st.sampled_from(["[" * 60, "[" * 5000])),  # JSON options nested too deeply
        max_size=6,
    )
)
def test_environment(env: dict[str, str]) -> None:
    env = {k.replace("\x00", ""): v.replace("\x00", "") for k, v in env.items()}  # os.environ cannot hold NUL
    env.pop("OMNIQ_CONFIG", None)  # YAML files are the next test's
    assert_no_secret(shown_text(lambda: Settings.load(env=env)), env.values())


@FUZZ
@given(
    document=st.dictionaries(st.one_of(setting_names, plain), yaml_values, max_size=6),
    nest=st.booleans(),
    damage=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(list(":'\"[]{}#&*!|>-?\t\n\\ \x85"))), max_size=3),
    raw=st.lists(st.tuples(setting_names, text_values), max_size=3),
    env=st.dictionaries(st.sampled_from(VARIABLES), text_values, max_size=2),
)
def test_yaml_file(
    config_path: Path,
    document: dict[Any, Any],
    nest: bool,
    damage: list[tuple[int, str]],
    raw: list[tuple[str, str]],
    env: dict[str, str],
) -> None:
    text = yaml.safe_dump({"omniq": document} if nest else document, allow_unicode=True)
    for at, char in damage:  # break the YAML here and there
        at %= len(text) + 1
        text = text[:at] + char + text[at:]
    text += "".join(f"{key}: {value}\n" for key, value in raw)  # unquoted, as people write them
    config_path.write_text(text, encoding="utf-8")
    env = {**{k: v.replace("\x00", "") for k, v in env.items()}, "OMNIQ_CONFIG": str(config_path)}
    try:
        parsed = [yaml.safe_load(text)]
    except (yaml.YAMLError, RecursionError):
        parsed = []
    inputs = [document, raw, env, parsed]
    assert_no_secret(shown_text(lambda: Settings.load(env=env)), inputs)


@FUZZ
@given(overrides=st.dictionaries(setting_names, code_values, max_size=5), direct=st.booleans())
def test_arguments_in_code(overrides: dict[str, Any], direct: bool) -> None:
    make = (lambda: Settings(**overrides)) if direct else (lambda: Settings.load(env={}, **overrides))
    assert_no_secret(shown_text(make), [overrides])


@FUZZ
@given(text=st.one_of(urls, mutated(urls), st.lists(st.one_of(urls, st.text(max_size=8)), max_size=4).map(" ".join)))
def test_redact_url_leaves_urllib_no_password(text: str) -> None:
    redacted = redact_url(text)
    try:
        password = urllib.parse.urlsplit(redacted).password
    except ValueError:
        return  # urllib refuses the netloc altogether
    assert password in (None, "", "***")
    for secret in secrets_in([text]):
        assert secret not in redacted
