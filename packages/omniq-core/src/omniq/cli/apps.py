"""Finding the app a command works on, and naming the place it reads."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from omniq.app import AsyncOmniQ
from omniq.config import COMPONENTS
from omniq.errors import OmniQError, redact_url

__all__ = ["app_from", "load_app", "places"]


def load_app(spec: str) -> AsyncOmniQ:
    """Import ``module:attr`` / ``module.attr`` and return the AsyncOmniQ behind it.

    Raises:
        OmniQError: the module or attribute cannot be found, or is not an app.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise OmniQError(f"cannot load app {spec!r}: expected 'module:attribute' or 'module.attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OmniQError(f"cannot load app {spec!r}: {exc}") from exc
    try:
        target: Any = getattr(module, attr)
    except AttributeError as exc:
        raise OmniQError(f"cannot load app {spec!r}: module {module_name!r} has no attribute {attr!r}") from exc
    from omniq.sync import OmniQ

    if not isinstance(target, (AsyncOmniQ, OmniQ)) and callable(target):
        target = target()
    if isinstance(target, OmniQ):
        return target.async_app
    if isinstance(target, AsyncOmniQ):
        return target
    raise OmniQError(f"cannot load app {spec!r}: {type(target).__name__} is not an OmniQ or AsyncOmniQ")


def app_from(spec: str | None) -> AsyncOmniQ:
    """The app named by ``--app``, or one built from the environment."""
    return load_app(spec) if spec else AsyncOmniQ.from_env()


def _place(app: AsyncOmniQ, component: str) -> str:
    """``<type> at <where>``: a file path (absolute) or a redacted URL, with the key prefix or schema."""
    backend = getattr(app, component)
    path = getattr(backend, "path", None)
    url = getattr(backend, "url", None)
    if path is not None:
        where = os.path.abspath(path)
    elif url and "://" in str(url):
        where = redact_url(str(url))
    elif url:
        where = os.path.abspath(url)  # the file backend's root directory
    else:
        return f"{app.settings.component(component).type} (this process only)"
    for detail in ("prefix", "schema"):
        value = getattr(backend, detail, None)
        if isinstance(value, str) and value:
            where += f" ({detail} {value})"
    return f"{app.settings.component(component).type} at {where}"


def places(app: AsyncOmniQ) -> list[str]:
    """One line when the three components share a place, else one line per component."""
    found = {component: _place(app, component) for component in COMPONENTS}
    if len(set(found.values())) == 1:
        return [f"backend: {found[COMPONENTS[0]]}"]
    return [f"{component.replace('_', ' ')}: {place}" for component, place in found.items()]
