"""The OmniQ apps behind a backend: settings from its ``OPTIONS``, one producer app per process.

Django builds a backend object per thread (its connection handler is
thread-local) and as early as a module's ``@task`` decorator. The producer
app, with its event-loop thread and connections, is therefore made on first
use and shared by every thread of the process: one per backend alias and
``OPTIONS``, and per process id, so a forked child makes its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Mapping
from typing import Any

from omniq.config import Settings
from omniq.contrib.django import _compat as dj
from omniq.sync import OmniQ

__all__ = ["OPTION_NAMES", "close_producer", "omniq_settings", "producer", "validate_options"]

#: the keys a backend's ``OPTIONS`` may have.
OPTION_NAMES = ("SETTINGS",)

_lock = threading.Lock()
_producers: dict[tuple[int, str, str], OmniQ] = {}


def validate_options(alias: str, options: Mapping[str, Any]) -> None:
    """Raise ImproperlyConfigured for an unknown ``OPTIONS`` key or ``SETTINGS`` that is not a mapping."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise dj.ImproperlyConfigured(
            f"TASKS[{alias!r}]['OPTIONS'] has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"expected any of {', '.join(OPTION_NAMES)}"
        )
    if not isinstance(options.get("SETTINGS", {}), Mapping):
        raise dj.ImproperlyConfigured(
            f"TASKS[{alias!r}]['OPTIONS']['SETTINGS'] must be a mapping of OmniQ settings (backend, url, base_dir, ...)"
        )


def omniq_settings(options: Mapping[str, Any], queues: Collection[str] = ()) -> Settings:
    """OmniQ's settings for a backend: ``OPTIONS["SETTINGS"]`` over ``OMNIQ_*`` over YAML over defaults.

    ``queues`` (the backend's ``QUEUES``) become the queues a worker consumes,
    unless ``SETTINGS`` or ``$OMNIQ_QUEUES`` name them.

    Raises:
        ConfigurationError: a setting is unknown or not valid.
    """
    overrides = dict(options.get("SETTINGS", {}))
    if queues and "queues" not in overrides and "OMNIQ_QUEUES" not in os.environ:
        overrides["queues"] = tuple(sorted(queues))
    return Settings.load(**overrides)


def _key(alias: str, options: Mapping[str, Any]) -> tuple[int, str, str]:
    return os.getpid(), alias, repr(sorted(options.get("SETTINGS", {}).items()))


def producer(alias: str, options: Mapping[str, Any]) -> OmniQ:
    """The process's app for the backend ``alias`` with these ``OPTIONS`` (made on first use)."""
    key = _key(alias, options)
    with _lock:
        app = _producers.get(key)
        if app is None:
            app = _producers[key] = OmniQ(omniq_settings(options))
        return app


def close_producer(alias: str, options: Mapping[str, Any]) -> None:
    """Close that app, if this process made one; the next use makes a new one."""
    with _lock:
        app = _producers.pop(_key(alias, options), None)
    if app is not None:
        app.close()
