"""The backend registry: entry points, install hints, third-party registration, duplicates, blocking."""

from __future__ import annotations

import types

import pytest

from omniq import BackendNotFoundError, ConfigurationError, hookimpl, plugins
from omniq.backends.memory import MemoryTaskQueue
from omniq.hookspecs import BackendSpec


def test_memory_registers_through_the_entry_point_group() -> None:
    names = {spec.name for _, spec in plugins.installed_backends("task_queue")}
    assert "memory" in names
    assert plugins.resolve_backend("task_queue", "memory") is MemoryTaskQueue
    dists = {spec.distribution for _, spec in plugins.installed_backends() if spec.name == "memory"}
    assert dists == {"omniq-core"}


def test_unknown_name_lists_installed_types() -> None:
    with pytest.raises(BackendNotFoundError) as info:
        plugins.resolve_backend("result_storage", "nope")
    assert "installed:" in str(info.value) and "memory" in str(info.value)


def test_first_party_name_not_installed_gets_an_install_hint() -> None:
    plugins.block("nats")
    try:
        # local paths, omniq-core's too: these distributions are not on a package index
        with pytest.raises(BackendNotFoundError, match=r"pip install \./packages/omniq-core \./packages/omniq-nats$"):
            plugins.resolve_backend("task_queue", "nats")
    finally:
        plugins._blocked.discard("nats")
        plugins._manager = None
        plugins._invalidate()


def _plugin(name: str, path: str) -> types.SimpleNamespace:
    @hookimpl
    def omniq_task_queue_types() -> list[BackendSpec]:
        return [BackendSpec(name=name, path=path, distribution="thirdparty-dist")]

    return types.SimpleNamespace(omniq_task_queue_types=omniq_task_queue_types)


def test_third_party_plugin_registered_at_run_time() -> None:
    plugin = _plugin("custom", "omniq.backends.memory:MemoryTaskQueue")
    plugins.register(plugin, name="custom-test")
    try:
        assert plugins.resolve_backend("task_queue", "custom") is MemoryTaskQueue
    finally:
        plugins.get_plugin_manager().unregister(name="custom-test")
        plugins._invalidate()


def test_duplicate_names_from_two_distributions_are_refused() -> None:
    plugins.register(_plugin("memory", "elsewhere:Queue"), name="dup-test")
    try:
        with pytest.raises(ConfigurationError, match="thirdparty-dist"):
            plugins.resolve_backend("task_queue", "memory")
    finally:
        plugins.get_plugin_manager().unregister(name="dup-test")
        plugins._invalidate()


def test_a_plugin_whose_class_is_missing_fails_clearly() -> None:
    plugins.register(_plugin("broken", "omniq.backends.memory:NoSuchClass"), name="broken-test")
    try:
        with pytest.raises(BackendNotFoundError, match="does not exist"):
            plugins.resolve_backend("task_queue", "broken")
    finally:
        plugins.get_plugin_manager().unregister(name="broken-test")
        plugins._invalidate()


def test_misspelt_hook_is_rejected_at_registration() -> None:
    @hookimpl
    def omniq_task_queue_typo() -> list[BackendSpec]:
        return []

    manager = plugins.get_plugin_manager()
    manager.register(types.SimpleNamespace(omniq_task_queue_typo=omniq_task_queue_typo), name="typo-test")
    try:
        with pytest.raises(Exception, match="unknown hook"):
            manager.check_pending()
    finally:
        manager.unregister(name="typo-test")


class Rot13JSON:
    """A toy third-party serializer: JSON with every string rot13-encoded."""

    name = "rot13json"

    def dumps(self, value: object) -> bytes:
        import codecs
        import json

        return codecs.encode(json.dumps(value), "rot13").encode()

    def loads(self, data: bytes) -> object:
        import codecs
        import json

        return json.loads(codecs.decode(data.decode(), "rot13"))


def test_plugin_serializers_are_found_by_name() -> None:
    from omniq import AsyncOmniQ, Settings
    from omniq.hookspecs import SerializerSpec

    @hookimpl
    def omniq_serializers() -> list[SerializerSpec]:
        return [SerializerSpec(name="rot13json", path=f"{__name__}:Rot13JSON", distribution="thirdparty-dist")]

    plugins.register(types.SimpleNamespace(omniq_serializers=omniq_serializers), name="serializer-test")
    try:
        app = AsyncOmniQ(Settings(backend="memory", serializer="rot13json"))
        payload = app.serializer.dumps({"greeting": "hello"})
        assert payload.startswith(b"\x09rot13json") and b"uryyb" in payload
        assert app.serializer.loads(payload) == {"greeting": "hello"}
        with pytest.raises(ConfigurationError, match="installed: .*rot13json"):
            AsyncOmniQ(Settings(backend="memory", serializer="nosuchformat"))
    finally:
        plugins.get_plugin_manager().unregister(name="serializer-test")


def test_capabilities_are_declared_once_on_the_class() -> None:
    # First-party plugins leave BackendSpec.capabilities (deprecated) empty; the class is the truth.
    for component, spec in plugins.installed_backends():
        if spec.distribution.startswith("omniq-"):
            assert spec.capabilities == frozenset(), f"{spec.name} {component} declares capabilities in its spec"
        declared = plugins.backend_capabilities(component, spec.name)
        assert declared == plugins.resolve_backend(component, spec.name).capabilities


def test_a_third_party_spec_with_capabilities_still_loads() -> None:
    @hookimpl
    def omniq_task_queue_types() -> list[BackendSpec]:
        spec = BackendSpec("legacy", "omniq.backends.memory:MemoryTaskQueue", "legacy-dist", frozenset({"durable"}))
        return [spec]

    plugins.register(types.SimpleNamespace(omniq_task_queue_types=omniq_task_queue_types), name="legacy-test")
    try:
        assert plugins.backend_capabilities("task_queue", "legacy") == MemoryTaskQueue.capabilities
    finally:
        plugins.get_plugin_manager().unregister(name="legacy-test")
        plugins._invalidate()
