"""Settings: defaults, precedence (code > env > YAML > defaults), validation, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniq import AsyncOmniQ, BackendNotFoundError, ConfigurationError
from omniq.config import BackendType, Settings


def test_defaults_are_sqlite_with_results_and_events() -> None:
    settings = Settings()
    assert settings.backend == BackendType.SQLITE.value
    assert settings.serializer == "msgpack"
    assert settings.events_enabled is True
    assert settings.component("task_queue").type == "sqlite"


def test_seed_call_shape_is_accepted(tmp_path: Path) -> None:
    # the seed passed base_dir as a str, converted at run time (Settings declares the converted type)
    settings = Settings(backend=BackendType.MEMORY, base_dir=str(tmp_path), serializer="json")  # type: ignore[arg-type]
    assert settings.backend == "memory"
    assert settings.base_dir == tmp_path
    assert settings.serializer == "json"


def test_precedence_code_over_env_over_yaml_over_defaults(tmp_path: Path) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text("backend: redis\nmax_workers: 7\nresult_ttl: 10m\nlease_duration: 90\n")
    env = {"OMNIQ_CONFIG": str(config), "OMNIQ_MAX_WORKERS": "12", "OMNIQ_BACKEND": "postgres"}
    settings = Settings.load(env=env, backend="memory")
    assert settings.backend == "memory"  # code beats env and YAML
    assert settings.max_workers == 12  # env beats YAML
    assert settings.result_ttl == 600.0  # YAML beats defaults
    assert settings.lease_duration == 90.0
    assert settings.default_max_retries == 3  # default


def test_per_component_types_and_urls() -> None:
    env = {
        "OMNIQ_BACKEND": "redis",
        "OMNIQ_URL": "redis://127.0.0.1:6379/3",
        "OMNIQ_EVENT_STORAGE_TYPE": "postgres",
        "OMNIQ_EVENT_STORAGE_URL": "postgresql://u@h/db",
        "OMNIQ_RESULT_STORAGE_OPTIONS": '{"stream_maxlen": 5}',
    }
    settings = Settings.load(env=env)
    assert settings.component("task_queue").type == "redis"
    assert settings.component("task_queue").url == "redis://127.0.0.1:6379/3"
    assert settings.component("result_storage").options == {"stream_maxlen": 5}
    events = settings.component("event_storage")
    assert (events.type, events.url) == ("postgres", "postgresql://u@h/db")


def test_component_of_another_type_does_not_inherit_the_default_url() -> None:
    settings = Settings(backend="redis", url="redis://h/0", result_storage_type="memory")
    assert settings.component("result_storage").url is None


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OMNIQ_MAX_WORKERS", "many", "positive integer"),
        ("OMNIQ_MAX_WORKERS", "0", "positive integer"),
        ("OMNIQ_RESULT_TTL", "soon", "duration"),
        ("OMNIQ_DEFAULT_WORKER", "fiber", "async, thread, process"),
        ("OMNIQ_LOG_LEVEL", "LOUD", "debug, info, warning"),
        ("OMNIQ_EVENTS_ENABLED", "maybe", "true, false"),
        ("OMNIQ_DEFAULT_MAX_RETRIES", "-1", "integer >= 0"),
        ("OMNIQ_TASK_QUEUE_OPTIONS", "{nope", "JSON object"),
    ],
)
def test_invalid_env_values_name_the_variable_and_accepted_values(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env={variable: value})
    assert variable in str(info.value)
    assert expected in str(info.value)


def test_heartbeat_must_be_shorter_than_lease() -> None:
    with pytest.raises(ConfigurationError, match="heartbeat_interval"):
        Settings(lease_duration=5, heartbeat_interval=5)


def test_unknown_setting_in_code_and_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown setting"):
        Settings.load(env={}, bakend="memory")
    config = tmp_path / "bad.yaml"
    config.write_text("bakend: memory\n")
    with pytest.raises(ConfigurationError, match="bakend"):
        Settings.load(env={"OMNIQ_CONFIG": str(config)})


def test_unreadable_or_malformed_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        Settings.load(env={"OMNIQ_CONFIG": str(tmp_path / "missing.yaml")})
    config = tmp_path / "bad.yaml"
    config.write_text("backend: [unclosed\n")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        Settings.load(env={"OMNIQ_CONFIG": str(config)})


def test_passwords_never_appear_in_repr() -> None:
    settings = Settings(backend="redis", url="redis://user:hunter2@db:6379/0", task_queue_url="postgresql://a:pw@h/x")
    text = repr(settings) + repr(settings.component("task_queue"))
    assert "hunter2" not in text
    assert ":pw@" not in text
    assert "user:***@db" in text


@pytest.mark.anyio
async def test_unknown_task_queue_type_names_installed_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_TYPE", "nope")
    app = AsyncOmniQ()
    with pytest.raises(BackendNotFoundError) as info:
        await app.connect()
    message = str(info.value)
    assert "'nope'" in message
    assert "OMNIQ_TASK_QUEUE_TYPE" in message
    assert "memory" in message and "sqlite" in message


def test_from_settings_fills_declared_options_unless_given() -> None:
    from typing import Any, ClassVar

    from omniq.backends.memory import MemoryResultStorage

    class Prefixed(MemoryResultStorage):
        settings_options: ClassVar[dict[str, str]] = {"prefix": "key_prefix", "ttl": "result_ttl"}

        def __init__(self, url: str | None = None, **options: Any) -> None:
            super().__init__(url)
            self.options = options

    settings = Settings(backend="memory", key_prefix="app1", result_ttl=60, result_storage_options={"ttl": 5})
    built = Prefixed.from_settings(settings.component("result_storage"), settings)
    assert built.options == {"prefix": "app1", "ttl": 5}  # the component's own option wins
