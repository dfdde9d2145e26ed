"""Parsers of setting values: each takes a raw value (a string from the environment, a YAML
value or a value given in code) and the name to report, and returns the parsed value or
raises :class:`~omniq.errors.ConfigurationError` naming the setting and what it accepts.

A rejected value is shown through :func:`omniq._limits.shown`, never raw, and no
exception whose text holds the value is chained: a URL put in the wrong setting must
not carry its password into a message or a traceback.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omniq._limits import MAX_PAYLOAD_SIZE, MAX_RETRIES, MAX_WORKERS, seconds, shown
from omniq.constants import DEFAULT_PREFIX
from omniq.errors import ConfigurationError, redact_url

Parser = Callable[[Any, str], Any]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_NONE_WORDS = {"", "none", "null", "never", "off"}
#: the longest string the numeric parsers read (longer ones are out of range anyway).
_LONGEST_NUMBER = 40


def _invalid(name: str, value: Any, expected: str) -> ConfigurationError:
    return ConfigurationError(f"{name}={shown(value)} is not valid: expected {expected}")


def duration(value: Any, name: str, *, allow_none: bool, positive: bool = False) -> float | None:
    """Seconds: a number, ``"30s"``, ``"5m"``, ``"1.5h"``, ``"2d"``, a timedelta, or none (if allowed)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if allow_none:
            return None
        raise ConfigurationError(f"{name} is required: expected a duration such as 30, '30s', '5m' or '1h'")
    if isinstance(value, str):
        match = _DURATION.match(value) if len(value) <= _LONGEST_NUMBER else None
        if not match:
            accepted = "a duration such as 30, '30s', '5m', '1h'" + (" or 'none'" if allow_none else "")
            raise _invalid(name, value, accepted)
        value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return seconds(value, name, positive=positive)


def bounded_int(low: int, high: int, expected: str) -> Parser:
    """An integer in ``[low, high]``: an int or a string of digits."""

    def parse(value: Any, name: str) -> int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and len(value) <= _LONGEST_NUMBER:
            try:
                number = int(value.strip())
            except ValueError:
                pass
        if number is None or not low <= number <= high:
            raise _invalid(name, value, f"{expected} (at most {high})")
        return number

    return parse


positive_workers = bounded_int(1, MAX_WORKERS, "a positive integer")
retries = bounded_int(0, MAX_RETRIES, "an integer >= 0")
payload_size = bounded_int(1, MAX_PAYLOAD_SIZE, "a positive integer of bytes")


def boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else ""
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise _invalid(name, value, "one of true, false, 1, 0, yes, no")


def _word(value: Any) -> str | None:
    """The lower-cased text of a string or enum value; None for anything else."""
    value = value.value if isinstance(value, enum.Enum) else value
    return value.strip().lower() if isinstance(value, str) else None


def choice(choices: tuple[str, ...]) -> Parser:
    def parse(value: Any, name: str) -> str:
        text = _word(value)
        if text is None or text not in choices:
            raise _invalid(name, value, f"one of {', '.join(choices)}")
        return text

    return parse


def backend_name(value: Any, name: str) -> str:
    text = _word(value)
    if text is None or not re.fullmatch(r"[a-z][a-z0-9_.-]{0,99}", text):
        hint = (
            " (a URL goes in url or the component's _url setting)" if isinstance(value, str) and "://" in value else ""
        )
        raise _invalid(name, value, f"a backend name such as sqlite, redis{hint}")
    return text


def optional_backend_name(value: Any, name: str) -> str | None:
    return None if value is None else backend_name(value, name)


def optional_str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise ConfigurationError(f"{name} is not valid: expected a string, got {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise ConfigurationError(f"{name} is not valid: expected a string, got {type(text).__name__}")
    return text.strip() or None


def directory(value: Any, name: str) -> Path:
    text = optional_str(value, name)
    # A URL is refused: Path() would fold its // and hide its password from redaction.
    if text is None or "\x00" in text or "://" in text or redact_url(text) != text:
        raise _invalid(name, value, "a local directory path (URLs go in url or a component's _url)")
    return Path(os.path.expanduser(text))


def key_prefix(value: Any, name: str) -> str:
    text = optional_str(value, name) or DEFAULT_PREFIX
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", text):  # each backend checks its own, stricter rules
        raise _invalid(name, value, "at most 64 letters, digits, '_', '-', '.' or ':', such as omniq or myapp")
    return text


def _items(value: Any) -> list[Any] | None:
    """The items of a comma-separated string or a YAML list; None for anything else."""
    if isinstance(value, str):
        return value.split(",")
    return list(value) if isinstance(value, list | tuple | set | frozenset) else None


def _holds_url(value: Any) -> bool:
    return isinstance(value, str) and ("://" in value or redact_url(value) != value)


def queues(value: Any, name: str) -> tuple[str, ...]:
    items = _items(value)
    # A URL is refused whole: split at its commas, its password would become queue names.
    if items is None or _holds_url(value) or not all(isinstance(item, str) and not _holds_url(item) for item in items):
        raise _invalid(name, value, "a comma-separated list (or a YAML list) of queue names")
    names = tuple(item.strip() for item in items if item.strip())
    if not names:
        raise _invalid(name, value, "a comma-separated list of queue names")
    return names


def options(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError as exc:  # the message holds a position, never the text
            raise ConfigurationError(f"{name} is not valid: expected a JSON object ({exc})") from None
        except RecursionError:
            raise ConfigurationError(f"{name} is not valid: expected a JSON object, nested too deeply") from None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ConfigurationError(f"{name} is not valid: expected a mapping of option names to values")
    return dict(value)


def serializer(value: Any, name: str) -> str:
    text = _word(value)
    if text is None or not re.fullmatch(r"[a-z][a-z0-9_-]{0,99}", text):
        raise _invalid(name, value, "a serializer name such as msgpack, json")
    return text


def serializers(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = _items(value)
    try:
        if items is None:
            raise ValueError
        return tuple(serializer(item, name) for item in items if not isinstance(item, str) or item.strip())
    except (ValueError, ConfigurationError):
        raise _invalid(name, value, "a comma-separated list of serializer names such as msgpack, json") from None


def log_level(value: Any, name: str) -> str:
    level: str = choice(("debug", "info", "warning", "error", "critical"))(value, name)
    return level.upper()


def log_format(value: Any, name: str) -> str:
    text: str = choice(("text", "json"))(value, name)
    return text
