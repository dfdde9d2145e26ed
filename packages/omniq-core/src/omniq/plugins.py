"""Plugin manager and the (component, name) -> backend registry.

Plugins are loaded from the ``omniq`` entry-point group the first time they
are needed. The registry asks every plugin which backends it provides (the
``omniq_*_types`` hooks), imports an implementation only when settings
select it, and explains a miss: it lists the installed names and, for a
first-party name that is not installed, the distribution to install.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

import pluggy

from omniq import hookspecs
from omniq.errors import BackendNotFoundError, ConfigurationError
from omniq.hookspecs import BackendSpec

__all__ = [
    "KNOWN_BACKENDS",
    "block",
    "get_plugin_manager",
    "install_command",
    "backend_capabilities",
    "installed_backends",
    "lazy_exports",
    "register",
    "resolve_backend",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "omniq"


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each exported name from its module on first use.

    A backend's ``__init__`` uses it so that loading the entry point (which
    imports the package) never imports the driver; the registry imports the
    class only when settings select the backend::

        __getattr__ = lazy_exports(__name__, {"RedisTaskQueue": "omniq_redis.task_queue"})

    Args:
        package: the package's ``__name__``, for the error on a missing name.
        exports: public name -> module that defines it.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__


def install_command(*distributions: str) -> str:
    """The command that installs first-party distributions, run from the root of a clone of OmniQ.

    OmniQ's distributions are not on a package index (an unrelated project is
    published on PyPI as "omniq"), so every one is named by its path, omniq-core
    included: pip would look for a dependency not named in the same call on the index.
    An extra (``"omniq-core[dashboard]"``) replaces the plain name and is quoted
    for the shell: ``pip install './packages/omniq-core[dashboard]'``.
    """
    names: dict[str, str] = {"omniq-core": "omniq-core"}
    for requirement in distributions:
        names[requirement.partition("[")[0]] = requirement
    paths = (f"./packages/{requirement}" for requirement in names.values())
    return "pip install " + " ".join(f"'{path}'" if "[" in path else path for path in paths)


#: first-party backends, so an uninstalled one gets an install hint.
KNOWN_BACKENDS = {
    "memory": "omniq-core",
    "file": "omniq-core",
    "sqlite": "omniq-sqlite",
    "redis": "omniq-redis",
    "postgres": "omniq-postgres",
    "nats": "omniq-nats",
}

_HOOK_BY_COMPONENT = {
    "task_queue": "omniq_task_queue_types",
    "result_storage": "omniq_result_storage_types",
    "event_storage": "omniq_event_storage_types",
}

_lock = threading.RLock()
_manager: pluggy.PluginManager | None = None
_registry: dict[tuple[str, str], BackendSpec] | None = None
_blocked: set[str] = set()


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, loading entry points on first use."""
    global _manager
    with _lock:
        if _manager is None:
            manager = pluggy.PluginManager("omniq")
            manager.add_hookspecs(hookspecs)
            for name in _blocked:
                manager.set_blocked(name)
            _register_builtin_observers(manager)
            manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            manager.check_pending()
            _manager = manager
        return _manager


def register(plugin: ModuleType | object, name: str | None = None) -> None:
    """Register a plugin object at run time (tests, in-tree backends)."""
    with _lock:
        get_plugin_manager().register(plugin, name=name)
        _invalidate()


def block(name: str) -> None:
    """Disable the plugin registered (or to be loaded) under ``name`` (its entry-point name)."""
    with _lock:
        _blocked.add(name)
        if _manager is not None:
            if _manager.get_plugin(name) is not None:
                _manager.unregister(name=name)
            _manager.set_blocked(name)
        _invalidate()


def _invalidate() -> None:
    global _registry
    _registry = None


def _distribution_of(plugin: object) -> str:
    for candidate, dist in get_plugin_manager().list_plugin_distinfo():
        if candidate is plugin:
            return str(dist.project_name)
    return getattr(plugin, "__name__", repr(plugin))


def _build_registry() -> dict[tuple[str, str], BackendSpec]:
    manager = get_plugin_manager()
    registry: dict[tuple[str, str], BackendSpec] = {}
    for component, hook_name in _HOOK_BY_COMPONENT.items():
        hook = getattr(manager.hook, hook_name)
        for impl in hook.get_hookimpls():
            specs: Iterable[BackendSpec] = impl.function() or ()
            for spec in specs:
                key = (component, spec.name)
                if key in registry and registry[key].path != spec.path:
                    raise ConfigurationError(
                        f"two plugins register the {component} type {spec.name!r}: "
                        f"{registry[key].distribution} ({registry[key].path}) and "
                        f"{spec.distribution} ({spec.path}); uninstall one or block it with omniq.plugins.block()"
                    )
                registry[key] = spec
    return registry


def _get_registry() -> dict[tuple[str, str], BackendSpec]:
    global _registry
    with _lock:
        if _registry is None:
            _registry = _build_registry()
        return _registry


def installed_backends(component: str | None = None) -> list[tuple[str, BackendSpec]]:
    """List ``(component, spec)`` for every registered backend, sorted by name."""
    items = sorted(_get_registry().items(), key=lambda item: (item[0][1], item[0][0]))
    return [(comp, spec) for (comp, _), spec in items if component is None or comp == component]


def backend_capabilities(component: str, name: str) -> frozenset[str]:
    """The capabilities the class registered as ``name`` declares (importing it).

    Raises:
        BackendNotFoundError: not installed, or its module does not import.
    """
    return frozenset(resolve_backend(component, name).capabilities)


def resolve_backend(component: str, name: str) -> type[Any]:
    """Import and return the class registered as ``name`` for ``component``.

    Raises:
        BackendNotFoundError: no such backend is installed; the message lists
            the installed names and, for first-party names, what to install.
    """
    if component not in _HOOK_BY_COMPONENT:
        raise ConfigurationError(f"unknown component {component!r}: expected one of {', '.join(_HOOK_BY_COMPONENT)}")
    spec = _get_registry().get((component, name))
    if spec is None:
        installed = sorted(spec.name for comp, spec in installed_backends(component))
        variable = f"OMNIQ_{component.upper()}_TYPE"
        message = f"unknown {component} type {name!r} ({variable} or OMNIQ_BACKEND); installed: {', '.join(installed) or 'none'}"
        if name in KNOWN_BACKENDS:
            command = install_command(KNOWN_BACKENDS[name])
            message += f". Install it from the root of a clone of the OmniQ repository: {command}"
        raise BackendNotFoundError(message)
    module_name, _, attr = spec.path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        how = f"reinstall {spec.distribution}"
        if spec.distribution in KNOWN_BACKENDS.values():
            how += f" from the root of a clone of the OmniQ repository: {install_command(spec.distribution)}"
        raise BackendNotFoundError(
            f"the {component} backend {name!r} from {spec.distribution} cannot be imported ({exc}); {how}"
        ) from exc
    try:
        return getattr(module, attr)  # type: ignore[no-any-return]
    except AttributeError as exc:
        raise BackendNotFoundError(f"{spec.distribution} registers {spec.path!r}, which does not exist") from exc


def plugin_serializers(names: Iterable[str]) -> list[Any]:
    """Instances of the plugin serializers called ``names`` (``omniq_serializers`` hook).

    Built-in names need no plugin and are not looked up; an unknown name is an
    error listing what plugins offer.
    """
    wanted = set(names)
    if not wanted:
        return []
    specs = {spec.name: spec for specs in get_plugin_manager().hook.omniq_serializers() for spec in specs or ()}
    missing = wanted - set(specs)
    if missing:
        from omniq.serialization import BUILTIN_SERIALIZERS

        offered = sorted({*BUILTIN_SERIALIZERS, *specs})
        raise ConfigurationError(
            f"OMNIQ_SERIALIZER / OMNIQ_ACCEPT_SERIALIZERS name unknown serializer(s) {', '.join(sorted(missing))}; "
            f"installed: {', '.join(offered)}"
        )
    instances = []
    for name in sorted(wanted):
        module_name, _, attr = specs[name].path.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(
                f"serializer {name!r} from {specs[name].distribution} cannot be loaded ({exc})"
            ) from exc
        instances.append(cls())
    return instances


def _register_builtin_observers(manager: pluggy.PluginManager) -> None:
    """The core's own lifecycle observers, registered like any plugin (and blockable by name)."""
    from omniq.worker import task_log

    if not manager.is_blocked(task_log.PLUGIN_NAME):
        manager.register(task_log, name=task_log.PLUGIN_NAME)


def lifecycle_hooks_in_use() -> frozenset[str]:
    """Names of lifecycle hooks that at least one plugin implements (``omniq_`` + an event of :data:`omniq.lifecycle.EVENTS`).

    Deprecated: the core dispatches through :class:`omniq.lifecycle.Lifecycle`,
    which decides this once when built; kept for callers written before it.
    """
    hook = get_plugin_manager().hook
    names = [name for name in dir(hookspecs) if name.startswith(("omniq_task_", "omniq_worker_"))]
    return frozenset(name for name in names if getattr(hook, name).get_hookimpls())


def call_lifecycle(name: str, **kwargs: Any) -> None:
    """Call a lifecycle hook by its name, logging (never raising) an observer's exception.

    Deprecated: the core calls hooks through :class:`omniq.lifecycle.Lifecycle`;
    kept for callers written before it.
    """
    try:
        getattr(get_plugin_manager().hook, name)(**kwargs)
    except Exception:
        logger.exception("an omniq plugin failed in %s; ignored", name)
