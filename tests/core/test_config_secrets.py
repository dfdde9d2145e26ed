"""Settings failures are ConfigurationErrors naming the setting, and never show a password (issue 21).

Each case here was a fuzzing find: a URL given to a setting that is not a URL
was echoed whole, a YAML syntax error quoted its line, and some malformed
inputs escaped as TypeError, UnicodeDecodeError, RecursionError or ValueError.
"""

from __future__ import annotations

import traceback
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, ConfigurationError
from omniq.config import Settings
from omniq.errors import redact_url

URL = "redis://u:SECRETpw@host"
SECRET = "SECRETpw"


def everything_shown(exc: BaseException) -> str:
    """All text a user may see of ``exc``: message, repr and the formatted traceback (with its chain)."""
    return "".join([str(exc), repr(exc), *traceback.format_exception(type(exc), exc, exc.__traceback__)])


# -- passwords in messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable",
    [
        "OMNIQ_BACKEND",  # a backend name
        "OMNIQ_RESULT_TTL",  # a duration
        "OMNIQ_LEASE_DURATION",  # a duration that cannot be none
        "OMNIQ_MAX_WORKERS",  # an integer
        "OMNIQ_DEFAULT_MAX_RETRIES",  # an integer >= 0
        "OMNIQ_EVENTS_ENABLED",  # a boolean
        "OMNIQ_DEFAULT_WORKER",  # a choice
        "OMNIQ_LOG_LEVEL",  # a choice
        "OMNIQ_SERIALIZER",  # a serializer name
        "OMNIQ_ACCEPT_SERIALIZERS",  # serializer names
        "OMNIQ_TASK_QUEUE_TYPE",
        "OMNIQ_TASK_QUEUE_OPTIONS",  # JSON
        "OMNIQ_KEY_PREFIX",
    ],
)
def test_a_url_in_a_setting_that_is_not_a_url_is_never_echoed(variable: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env={variable: URL})
    assert variable in str(info.value)
    assert SECRET not in everything_shown(info.value)


@pytest.mark.parametrize(
    "key",
    ["backend", "result_ttl", "max_workers", "events_enabled", "default_worker", "serializer", "key_prefix"],
)
def test_a_url_in_a_yaml_setting_that_is_not_a_url_is_never_echoed(tmp_path: Path, key: str) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text(f"{key}: [{URL}]\n")
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env={"OMNIQ_CONFIG": str(config)})
    assert key in str(info.value)
    assert SECRET not in everything_shown(info.value)


@pytest.mark.parametrize("key", ["backend", "result_ttl", "max_workers", "events_enabled", "serializer"])
def test_a_url_given_in_code_is_never_echoed(key: str) -> None:
    given: dict[str, Any] = {key: URL}
    for build in (lambda: Settings(**given), lambda: Settings.load(env={}, **given)):
        with pytest.raises(ConfigurationError) as info:
            build()
        assert key in str(info.value)
        assert SECRET not in everything_shown(info.value)
    with pytest.raises(ConfigurationError) as info:
        AsyncOmniQ(**given)
    assert SECRET not in everything_shown(info.value)


@pytest.mark.parametrize("name", ["nats:'//:SECRETpw@h,redis://h", "x:/u:SECRETpw://h"])
def test_text_before_a_damaged_url_is_not_shown_as_its_scheme(name: str) -> None:
    # a fuzzing find: "<a URL: " + the text before "://" showed the password of a URL damaged before it
    with pytest.raises(ConfigurationError, match="unknown setting") as info:
        Settings.load(env={}, **dict[str, Any]({name: 1}))
    assert SECRET not in everything_shown(info.value)


def test_a_yaml_syntax_error_names_file_line_and_column_but_not_the_line(tmp_path: Path) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text(f"backend: redis\nurl: '{URL}\n")  # the quote is never closed
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env={"OMNIQ_CONFIG": str(config)})
    message = str(info.value)
    assert str(config) in message
    assert "line " in message and "column " in message
    assert SECRET not in everything_shown(info.value)


def test_an_unknown_yaml_key_holding_a_url_is_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text(f"{URL}: 1\n")
    with pytest.raises(ConfigurationError, match="unknown setting") as info:
        Settings.load(env={"OMNIQ_CONFIG": str(config)})
    assert SECRET not in everything_shown(info.value)


def test_a_url_given_as_the_config_path_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError, match="OMNIQ_CONFIG") as info:
        Settings.load(env={"OMNIQ_CONFIG": URL})
    assert SECRET not in everything_shown(info.value)


def test_urls_anywhere_in_settings_are_redacted_in_repr() -> None:
    settings = Settings(task_queue_options={"sentinel": URL, "nodes": ["redis://u:SECRET\tpw@h2"]}, url=URL)
    assert SECRET not in repr(settings)
    assert "redis://u:***@host" in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        "redis://u:p@SECRETpw@host",  # urllib: the password is everything up to the last @
        "redis://u:SECRET pw@host",  # a space in the password
        "redis://u:SECRET/pw@host",  # a slash: urllib sees no password, but it is one
        "redis://a@b:SECRETpw@host/0",  # an @ in the user name
        "redis://u:SECRET\tpw@host",  # urllib drops tabs and newlines before parsing
        "red\tis://u:SECRETpw@host",
        "redis:/\t/u:SECRETpw@host",
        "//u:SECRETpw@host/0",  # no scheme, but a netloc all the same
        "REDIS://u:SECRETpw@host",
    ],
)
def test_redact_url_removes_every_password_urllib_finds_and_more(url: str) -> None:
    redacted = redact_url(url)
    assert "SECRET" not in redacted
    assert urllib.parse.urlsplit(redacted).password in (None, "***")


def test_redact_url_keeps_what_is_not_a_password() -> None:
    assert redact_url("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("file:///tmp/a@b") == "file:///tmp/a@b"
    assert redact_url("postgresql://h/db?password=SECRETpw&x=1") == "postgresql://h/db?password=***&x=1"


def test_redact_url_in_free_text_with_several_urls() -> None:
    text = "failed redis://a:SECRET1@h1:6379/0 then nats://b:p@SECRET2@h2:4222 and postgresql://c:SECRET 3@h3/db"
    redacted = redact_url(text)
    assert "SECRET" not in redacted
    assert "h1:6379/0" in redacted and "h2:4222" in redacted and "h3/db" in redacted


def test_redact_url_is_linear_on_long_text() -> None:
    import time

    started = time.perf_counter()
    redact_url("a" * 200_000 + ":" + "b" * 200_000)
    redact_url("redis://" * 50_000)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("value", [URL, "redis://u:SECRET,pw@host", (URL,)])
def test_a_url_given_as_queue_names_is_refused_whole(value: Any) -> None:
    # split at its commas, a password would have become queue names that every repr shows
    with pytest.raises(ConfigurationError, match="queues") as info:
        Settings(queues=value)
    assert "SECRET" not in everything_shown(info.value)
    with pytest.raises(ConfigurationError, match="OMNIQ_BASE_DIR") as info:
        Settings.load(env={"OMNIQ_BASE_DIR": value if isinstance(value, str) else URL})  # Path() folds the //
    assert "SECRET" not in everything_shown(info.value)


# -- untyped exceptions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("queues:\n", "queues"),
        ("queues: 5\n", "queues"),
        ("queues: [a, [b]]\n", "queues"),
        ("accept_serializers:\n", None),  # null: no extra serializers, accepted
        ("accept_serializers: 5\n", "accept_serializers"),
        ("task_queue_options: {1: 2}\n", "task_queue_options"),
        ("base_dir: [x]\n", "base_dir"),
        ("1: x\n", "1"),
        ("backend: memory\n? [a, b]\n: x\n", "not valid YAML"),
        ("omniq: {backend: memory, 2: x}\n", "2"),
    ],
)
def test_malformed_yaml_values_are_configuration_errors(tmp_path: Path, text: str, key: str | None) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text(text)
    if key is None:
        assert Settings.load(env={"OMNIQ_CONFIG": str(config)}).accept_serializers == ()
        return
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env={"OMNIQ_CONFIG": str(config)})
    assert key in str(info.value)


def test_yaml_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_bytes(b"backend: \xff\xfe memory\n")
    with pytest.raises(ConfigurationError, match="UTF-8"):
        Settings.load(env={"OMNIQ_CONFIG": str(config)})


def test_deeply_nested_yaml_and_json_are_configuration_errors(tmp_path: Path) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text("queues: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigurationError, match="OMNIQ_CONFIG"):
        Settings.load(env={"OMNIQ_CONFIG": str(config)})
    with pytest.raises(ConfigurationError, match="OMNIQ_TASK_QUEUE_OPTIONS"):
        Settings.load(env={"OMNIQ_TASK_QUEUE_OPTIONS": "[" * 100_000})


def test_a_nul_byte_in_the_config_path_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OMNIQ_CONFIG"):
        Settings.load(env={"OMNIQ_CONFIG": "omniq\x00.yaml"})


def test_a_config_path_that_is_a_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        Settings.load(env={"OMNIQ_CONFIG": str(tmp_path)})


def test_unknown_settings_in_code_are_configuration_errors_naming_the_closest() -> None:
    with pytest.raises(ConfigurationError, match="max_workers"):
        Settings(max_worker=3)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="max_workers"):
        Settings().replace(max_worker=3)
    with pytest.raises(ConfigurationError, match="max_workers"):
        AsyncOmniQ(Settings(backend="memory"), max_worker=3)


def test_an_unknown_yaml_key_names_the_closest_setting(tmp_path: Path) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text("lease_duraton: 30\n")
    with pytest.raises(ConfigurationError, match="did you mean lease_duration"):
        Settings.load(env={"OMNIQ_CONFIG": str(config)})


# -- a misspelt environment variable (issue 13 item 6) ---------------------------------------------------


def test_a_misspelt_environment_variable_warns_naming_the_closest_setting() -> None:
    with pytest.warns(UserWarning, match="OMNIQ_LEASE_DURATON .*did you mean OMNIQ_LEASE_DURATION"):
        settings = Settings.load(env={"OMNIQ_LEASE_DURATON": "90"})
    assert settings.lease_duration == 30.0  # the misspelt variable is not applied


def test_tooling_variables_and_settings_do_not_warn() -> None:
    env = {
        "OMNIQ_REQUIRE_SERVERS": "1",
        "OMNIQ_TEST_REDIS_URL": "redis://127.0.0.1:6379/0",
        "OMNIQ_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1/test",
        "OMNIQ_TEST_NATS_URL": "nats://127.0.0.1:4222",
        "OMNIQ_FUZZ_EXAMPLES": "100",
        "OMNIQ_BACKEND": "memory",
        "OMNIQ_LEASE_DURATION": "60",
        "PATH": "/bin",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Settings.load(env=env).lease_duration == 60.0
