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
import difflib
import enum
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omniq import _limits, _setting_values as v
from omniq._setting_values import Parser
from omniq.constants import DEFAULT_BASE_DIR, DEFAULT_PREFIX
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
        url, options = _redacted(self.url), _redacted(dict(self.options))
        return f"ComponentSettings(type={self.type!r}, url={url!r}, options={options!r})"


def _field(default: Any, parser: Parser, doc: str, *, factory: bool = False) -> Any:
    metadata = {"parser": parser, "doc": doc}
    if factory:
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _dur(allow_none: bool, positive: bool = False) -> Parser:
    return lambda value, name: v.duration(value, name, allow_none=allow_none, positive=positive)


@dataclasses.dataclass(frozen=True, repr=False)
class Settings:
    """Everything OmniQ can be configured with.

    Each field maps to the environment variable ``OMNIQ_<FIELD>`` and the
    YAML key ``<field>``. Durations are seconds (``30``) or ``"30s"``, ``"5m"``.
    """

    backend: str = _field("sqlite", v.backend_name, "default backend type for all three components")
    url: str | None = _field(None, v.optional_str, "default URL for all three components")
    task_queue_type: str | None = _field(None, v.optional_backend_name, "task queue backend")
    task_queue_url: str | None = _field(None, v.optional_str, "task queue URL")
    task_queue_options: dict[str, Any] = _field(dict, v.options, "task queue options (JSON)", factory=True)
    result_storage_type: str | None = _field(None, v.optional_backend_name, "result storage backend")
    result_storage_url: str | None = _field(None, v.optional_str, "result storage URL")
    result_storage_options: dict[str, Any] = _field(dict, v.options, "result storage options (JSON)", factory=True)
    event_storage_type: str | None = _field(None, v.optional_backend_name, "event storage backend")
    event_storage_url: str | None = _field(None, v.optional_str, "event storage URL")
    event_storage_options: dict[str, Any] = _field(dict, v.options, "event storage options (JSON)", factory=True)
    base_dir: Path = _field(Path(DEFAULT_BASE_DIR), v.directory, "directory for local data")
    serializer: str = _field("msgpack", v.serializer, "format for task arguments and results")
    accept_serializers: tuple[str, ...] = _field(
        (), v.serializers, "extra formats a worker decodes (pickle-based ones must be listed or be `serializer`)"
    )
    log_level: str = _field("WARNING", v.log_level, "level used by omniq.logs.configure()")
    log_format: str = _field(
        "text", v.log_format, "log line format of `omniq worker`: text or json (one JSON object a line)"
    )
    default_worker: str = _field("async", v.choice(tuple(w.value for w in WorkerType)), "pool kind")
    max_workers: int = _field(10, v.positive_workers, "worker concurrency (tasks in flight)")
    queues: tuple[str, ...] = _field(("default",), v.queues, "queues a worker consumes (comma-separated)")
    task_ttl: float | None = _field(None, _dur(True), "seconds a task may wait before it expires unrun")
    result_ttl: float | None = _field(86400.0, _dur(True), "seconds a result is kept")
    event_ttl: float | None = _field(7 * 86400.0, _dur(True), "seconds events are kept")
    default_timeout: float | None = _field(None, _dur(True), "per-task timeout")
    default_max_retries: int = _field(3, v.retries, "retries after the first attempt")
    retry_backoff: float = _field(1.0, _dur(False), "first retry delay; doubles each retry")
    retry_backoff_max: float = _field(300.0, _dur(False), "cap on the retry delay")
    lease_duration: float = _field(30.0, _dur(False, True), "seconds a claim is held without a heartbeat")
    heartbeat_interval: float = _field(10.0, _dur(False, True), "seconds between lease extensions")
    sweep_interval: float = _field(5.0, _dur(False, True), "seconds between expired-lease recoveries")
    poll_interval: float = _field(1.0, _dur(False, True), "longest idle wait between claims")
    shutdown_grace: float = _field(30.0, _dur(False), "seconds in-flight tasks get on shutdown")
    events_enabled: bool = _field(True, v.boolean, "record task events")
    eager: bool = _field(False, v.boolean, "run each task at enqueue, in the enqueuing process (tests)")
    max_payload_size: int = _field(16 * 1024 * 1024, v.payload_size, "largest serialized payload in bytes")
    key_prefix: str = _field(DEFAULT_PREFIX, v.key_prefix, "prefix for keys, subjects, tables")

    def __new__(cls, *args: Any, **kwargs: Any) -> Settings:
        """Refuse unknown setting names with a ConfigurationError that names them."""
        # Before the dataclass's __init__ would raise a TypeError: an unknown name is a setting error.
        unknown = set(kwargs) - set(cls.field_names())
        if unknown:
            raise _unknown_settings(unknown, "")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            raw = getattr(self, field.name)
            try:
                parsed = field.metadata["parser"](raw, field.name)
            except ConfigurationError:
                raise
            except (TypeError, ValueError, ArithmeticError, RecursionError):  # a parser missed a case: still typed
                raise ConfigurationError(f"{field.name} is not valid: got {_limits.shown(raw)}") from None
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
            parts.append(f"{field.name}={_redacted(value)!r}")
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
        values = _read_yaml(path)
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
            raise _unknown_settings(unknown, "")
        _warn_unknown_variables(env)
        values: dict[str, Any] = {}
        path = config_file if config_file is not None else env.get("OMNIQ_CONFIG")
        if path:
            values.update(_read_yaml(path))
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


#: ``OMNIQ_*`` variables that are not settings: the config file, the worker slot a supervisor gives
#: each of its processes (``omniq worker --processes``) and the metrics flag it sets for them, the
#: dashboard's credentials, and test and CI tooling.
NOT_SETTINGS = (
    "OMNIQ_CONFIG",
    "OMNIQ_WORKER_PROCESS",
    "OMNIQ_PROMETHEUS_CHILD",
    "OMNIQ_DASHBOARD_AUTH",
    "OMNIQ_REQUIRE_SERVERS",
)
NOT_SETTINGS_PREFIXES = ("OMNIQ_TEST_", "OMNIQ_FUZZ_")


def _redacted(value: Any) -> Any:
    """``value`` with every string in it (options nest) passed through :func:`redact_url`."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {_redacted(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(map(_redacted, value)) if type(value) in (list, tuple) else value
    return value


def _closest(name: str, names: tuple[str, ...]) -> str:
    match = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def _unknown_settings(names: set[Any], where: str) -> ConfigurationError:
    """The error for settings (YAML keys, arguments) that do not exist, each with the closest one."""
    known = Settings.field_names()
    described = sorted(
        (name if _PLAIN_NAME.fullmatch(name) else _limits.shown(name)) + _closest(name.lower(), known)
        if isinstance(name, str)
        else _limits.shown(name)
        for name in names
    )
    return ConfigurationError(f"{where}unknown setting(s) {', '.join(described)}; expected any of {', '.join(known)}")


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]{1,60}")


def _warn_unknown_variables(env: Mapping[str, str]) -> None:
    """Warn about each ``OMNIQ_*`` variable that is no setting (a misspelt one is otherwise silently ignored)."""
    variables = tuple(f"OMNIQ_{name.upper()}" for name in Settings.field_names())
    for key in env:
        if (
            isinstance(key, str)
            and key.startswith("OMNIQ_")
            and key not in variables
            and key not in NOT_SETTINGS
            and not key.startswith(NOT_SETTINGS_PREFIXES)
        ):
            shown = key if _PLAIN_NAME.fullmatch(key) else _limits.shown(key)
            warnings.warn(
                f"{shown} is not an OmniQ setting and is ignored{_closest(key.upper(), variables)}",
                UserWarning,
                stacklevel=3,
            )


def _read_yaml(location: Any) -> dict[str, Any]:
    """The settings in a YAML file (its top level, or its ``omniq:`` mapping)."""
    import yaml

    text = os.fspath(location) if isinstance(location, str | os.PathLike) else None
    if not isinstance(text, str) or "\x00" in text:
        raise ConfigurationError(f"OMNIQ_CONFIG={_limits.shown(location)} is not valid: expected a file path")
    path = Path(text)
    where = f"OMNIQ_CONFIG={redact_url(text)!r}"
    try:
        data = yaml.safe_load(path.read_bytes())  # bytes: YAML's own UTF-8/16 detection, not the locale's
    except OSError as exc:
        raise ConfigurationError(f"{where} cannot be read: {exc.strerror}") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigurationError(
            f"{where} is not valid YAML: not UTF-8 or UTF-16 text (at byte {exc.position})"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{where} is not valid YAML{_yaml_position(exc)}") from None
    except RecursionError:
        raise ConfigurationError(f"{where} is not valid: it is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where} is not valid: expected a mapping of settings")
    data = data.get("omniq", data) if isinstance(data.get("omniq"), dict) else data
    unknown = set(data) - set(Settings.field_names())
    if unknown:
        raise _unknown_settings(unknown, f"{where}: ")
    return dict(data)


def _yaml_position(exc: Any) -> str:
    """Where a YAML error is, and what it is, without the text of the line (it may hold a password)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None)
    if not isinstance(problem, str):
        return where
    # Problems quote tags, anchors and aliases from the text: keep only quoted single characters.
    return f"{where}: " + _QUOTED.sub(lambda m: m[0] if len(m[0]) <= 6 else "'...'", problem)[:200]


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
