"""Settings: one type, four sources.

Precedence, highest first, as used by :meth:`Settings.load` (and so by
``AsyncOmniQ()``, ``AsyncOmniQ.from_env()`` and the CLI):

1. arguments in code (``Settings.load(backend="redis")``);
2. ``OMNIQ_*`` environment variables;
3. the YAML file named by ``OMNIQ_CONFIG`` (or ``config_file=``);
4. the defaults below.

``Settings(...)`` itself is plain: defaults plus the arguments you give,
validated, without reading the environment. Every invalid value raises
:class:`~omniq.errors.ConfigurationError` naming the variable (or key) and
what it accepts. URLs are redacted in ``repr``.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omniq.errors import ConfigurationError, redact_url

__all__ = ["COMPONENTS", "BackendType", "ComponentSettings", "Settings", "WorkerType"]

#: the three components, in the order the settings name them.
COMPONENTS = ("task_queue", "result_storage", "event_storage")


class BackendType(str, enum.Enum):
    """First-party backend names (third-party names are plain strings)."""

    MEMORY = "memory"
    FILE = "file"
    SQLITE = "sqlite"
    REDIS = "redis"
    POSTGRES = "postgres"
    NATS = "nats"


class WorkerType(str, enum.Enum):
    """How a worker runs task functions."""

    ASYNC = "async"  # coroutines on the worker's loop; sync functions in threads
    THREAD = "thread"  # every function in a thread pool
    PROCESS = "process"  # every function in a pool of child processes


@dataclasses.dataclass(frozen=True)
class ComponentSettings:
    """The resolved type, URL and options of one component."""

    type: str
    url: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        url = redact_url(self.url) if self.url else None
        return f"ComponentSettings(type={self.type!r}, url={url!r}, options={dict(self.options)!r})"


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_NONE_WORDS = {"", "none", "null", "never", "off"}


def _duration(value: Any, name: str, *, allow_none: bool) -> float | None:
    """Parse seconds: a number, ``"30s"``, ``"5m"``, ``"1.5h"``, a timedelta, or none."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if allow_none:
            return None
        raise ConfigurationError(f"{name} is required: expected a duration such as 30, '30s', '5m' or '1h'")
    if hasattr(value, "total_seconds"):
        value = value.total_seconds()
    if isinstance(value, bool):
        raise ConfigurationError(f"{name}={value!r} is not valid: expected a duration such as 30, '30s', '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            accepted = "a duration such as 30, '30s', '5m', '1h'" + (" or 'none'" if allow_none else "")
            raise ConfigurationError(f"{name}={value!r} is not valid: expected {accepted}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ConfigurationError(f"{name}={value!r} is not valid: a duration cannot be negative")
    return seconds


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except ValueError:
        number = -1
    if isinstance(value, bool) or number < 1:
        raise ConfigurationError(f"{name}={value!r} is not valid: expected a positive integer")
    return number


def _non_negative_int(value: Any, name: str) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except ValueError:
        number = -1
    if isinstance(value, bool) or number < 0:
        raise ConfigurationError(f"{name}={value!r} is not valid: expected an integer >= 0")
    return number


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name}={value!r} is not valid: expected one of true, false, 1, 0, yes, no")


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    text = str(value.value if isinstance(value, enum.Enum) else value).strip().lower()
    if text not in choices:
        raise ConfigurationError(f"{name}={value!r} is not valid: expected one of {', '.join(choices)}")
    return text


def _name(value: Any, name: str) -> str:
    text = str(value.value if isinstance(value, enum.Enum) else value).strip().lower()
    if not re.fullmatch(r"[a-z][a-z0-9_.-]*", text):
        raise ConfigurationError(f"{name}={value!r} is not valid: expected a backend name such as sqlite, redis")
    return text


def _optional_str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise ConfigurationError(f"{name} is not valid: expected a string, got {type(value).__name__}")
    text = os.fspath(value).strip()
    return text or None


def _queues(value: Any, name: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    queues = tuple(str(item).strip() for item in items if str(item).strip())
    if not queues:
        raise ConfigurationError(f"{name}={value!r} is not valid: expected a comma-separated list of queue names")
    return queues


def _options(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigurationError(f"{name} is not valid: expected a JSON object ({exc})") from exc
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{name} is not valid: expected a mapping of option names to values")
    return dict(value)


def _serializer(value: Any, name: str) -> str:
    text = str(value).strip().lower()
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", text):
        raise ConfigurationError(f"{name}={value!r} is not valid: expected a serializer name such as msgpack, json")
    return text


def _serializers(value: Any, name: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(_serializer(item, name) for item in items if str(item).strip())


def _log_level(value: Any, name: str) -> str:
    return _choice(value, name, ("debug", "info", "warning", "error", "critical")).upper()


Parser = Callable[[Any, str], Any]


def _field(default: Any, parser: Parser, doc: str, *, factory: bool = False) -> Any:
    metadata = {"parser": parser, "doc": doc}
    if factory:
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _dur(allow_none: bool) -> Parser:
    return lambda value, name: _duration(value, name, allow_none=allow_none)


@dataclasses.dataclass(frozen=True, repr=False)
class Settings:
    """Everything OmniQ can be configured with.

    Each field maps to the environment variable ``OMNIQ_<FIELD>`` and the
    YAML key ``<field>``. Durations are seconds (``30``) or ``"30s"``, ``"5m"``.
    """

    backend: str = _field("sqlite", _name, "default backend type for all three components")
    url: str | None = _field(None, _optional_str, "default URL for all three components")
    task_queue_type: str | None = _field(None, lambda v, n: None if v is None else _name(v, n), "task queue backend")
    task_queue_url: str | None = _field(None, _optional_str, "task queue URL")
    task_queue_options: dict[str, Any] = _field(dict, _options, "task queue options (JSON)", factory=True)
    result_storage_type: str | None = _field(
        None, lambda v, n: None if v is None else _name(v, n), "result storage backend"
    )
    result_storage_url: str | None = _field(None, _optional_str, "result storage URL")
    result_storage_options: dict[str, Any] = _field(dict, _options, "result storage options (JSON)", factory=True)
    event_storage_type: str | None = _field(
        None, lambda v, n: None if v is None else _name(v, n), "event storage backend"
    )
    event_storage_url: str | None = _field(None, _optional_str, "event storage URL")
    event_storage_options: dict[str, Any] = _field(dict, _options, "event storage options (JSON)", factory=True)
    base_dir: Path = _field(Path(".omniq"), lambda v, n: Path(os.path.expanduser(str(v))), "directory for local data")
    serializer: str = _field("msgpack", _serializer, "format for task arguments and results")
    accept_serializers: tuple[str, ...] = _field(
        (), _serializers, "extra formats a worker decodes (pickle-based ones must be listed or be `serializer`)"
    )
    log_level: str = _field("WARNING", _log_level, "level used by omniq.logging.configure()")
    default_worker: str = _field("async", lambda v, n: _choice(v, n, tuple(w.value for w in WorkerType)), "pool kind")
    max_workers: int = _field(10, _positive_int, "worker concurrency (tasks in flight)")
    queues: tuple[str, ...] = _field(("default",), _queues, "queues a worker consumes (comma-separated)")
    task_ttl: float | None = _field(None, _dur(True), "seconds a task may wait before it expires unrun")
    result_ttl: float | None = _field(86400.0, _dur(True), "seconds a result is kept")
    event_ttl: float | None = _field(7 * 86400.0, _dur(True), "seconds events are kept")
    default_timeout: float | None = _field(None, _dur(True), "per-task timeout")
    default_max_retries: int = _field(3, _non_negative_int, "retries after the first attempt")
    retry_backoff: float = _field(1.0, _dur(False), "first retry delay; doubles each retry")
    retry_backoff_max: float = _field(300.0, _dur(False), "cap on the retry delay")
    lease_duration: float = _field(30.0, _dur(False), "seconds a claim is held without a heartbeat")
    heartbeat_interval: float = _field(10.0, _dur(False), "seconds between lease extensions")
    sweep_interval: float = _field(5.0, _dur(False), "seconds between expired-lease recoveries")
    poll_interval: float = _field(1.0, _dur(False), "longest idle wait between claims")
    shutdown_grace: float = _field(30.0, _dur(False), "seconds in-flight tasks get on shutdown")
    events_enabled: bool = _field(True, _boolean, "record task events")
    max_payload_size: int = _field(16 * 1024 * 1024, _positive_int, "largest serialized payload in bytes")
    key_prefix: str = _field("omniq", lambda v, n: str(v).strip() or "omniq", "prefix for keys, subjects, tables")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            raw = getattr(self, field.name)
            parsed = field.metadata["parser"](raw, field.name)
            object.__setattr__(self, field.name, parsed)
        if self.heartbeat_interval >= self.lease_duration:
            raise ConfigurationError(
                f"heartbeat_interval={self.heartbeat_interval} is not valid: "
                f"it must be shorter than lease_duration={self.lease_duration}"
            )

    def __repr__(self) -> str:
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.default is not dataclasses.MISSING and value == field.default:
                continue
            if isinstance(value, str) and "://" in value:
                value = redact_url(value)
            parts.append(f"{field.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    # -- derived ---------------------------------------------------------------------------------

    def component(self, name: str) -> ComponentSettings:
        """Return the resolved settings of ``task_queue``, ``result_storage`` or ``event_storage``."""
        if name not in COMPONENTS:
            raise ConfigurationError(f"unknown component {name!r}: expected one of {', '.join(COMPONENTS)}")
        type_ = getattr(self, f"{name}_type") or self.backend
        url = getattr(self, f"{name}_url")
        if url is None and (getattr(self, f"{name}_type") is None or type_ == self.backend):
            url = self.url
        return ComponentSettings(type=type_, url=url, options=getattr(self, f"{name}_options"))

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all settings (YAML keys; upper-cased with ``OMNIQ_`` for the environment)."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Same as :meth:`load`: code > environment > YAML (``OMNIQ_CONFIG``) > defaults."""
        return cls.load(env=env, **overrides)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> Settings:
        """Defaults < the YAML file < ``overrides`` (the environment is not read)."""
        values = _read_yaml(Path(path))
        values.update(overrides)
        return cls(**values)

    @classmethod
    def load(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings from every source in precedence order.

        Args:
            env: the environment to read (``os.environ`` by default).
            config_file: a YAML file; defaults to ``$OMNIQ_CONFIG`` when set.
            **overrides: settings given in code; they win over everything.
        """
        env = os.environ if env is None else env
        unknown = set(overrides) - set(cls.field_names())
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(sorted(unknown))}: expected one of {', '.join(cls.field_names())}"
            )
        values: dict[str, Any] = {}
        path = config_file if config_file is not None else env.get("OMNIQ_CONFIG")
        if path:
            values.update(_read_yaml(Path(path)))
        for name in cls.field_names():
            key = f"OMNIQ_{name.upper()}"
            if key in env:
                values[name] = _EnvValue(env[key], key)
        values.update(overrides)
        return cls._build(values)

    @classmethod
    def _build(cls, values: Mapping[str, Any]) -> Settings:
        # Parse environment values under their variable's name so errors name OMNIQ_X, not x.
        fields = {field.name: field for field in dataclasses.fields(cls)}
        parsed: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, _EnvValue):
                parsed[name] = fields[name].metadata["parser"](value.raw, value.variable)
            else:
                parsed[name] = value
        return cls(**parsed)


@dataclasses.dataclass(frozen=True)
class _EnvValue:
    raw: str
    variable: str


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"OMNIQ_CONFIG={str(path)!r} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"OMNIQ_CONFIG={str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"OMNIQ_CONFIG={str(path)!r} is not valid: expected a mapping of settings")
    data = data.get("omniq", data) if isinstance(data.get("omniq"), dict) else data
    unknown = set(data) - set(Settings.field_names())
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown setting(s) {', '.join(sorted(unknown))}; expected any of {', '.join(Settings.field_names())}"
        )
    return dict(data)
