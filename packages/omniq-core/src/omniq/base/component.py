"""The life cycle every component shares: built unconnected, from settings; connect and close."""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from omniq.errors import NotSupportedError

if TYPE_CHECKING:
    from typing_extensions import Self

    from omniq.config import ComponentSettings, Settings

__all__ = ["Component"]


class Component(ABC):  # noqa: B024 - abstract by intent; its hooks are optional
    """Shared life cycle of the three components.

    Components are created unconnected; :meth:`connect` opens connections and
    creates schema, :meth:`close` releases everything. Both are idempotent.
    ``async with component:`` does both.
    """

    #: what the backend can do; see :class:`Capability`. The one declaration: the
    #: registry, ``omniq backends`` and the conformance suite all read it here.
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: the registered backend name (``"redis"``); set by the backend class.
    backend_name: ClassVar[str] = ""

    #: what the component is, in errors ("task queue").
    kind: ClassVar[str] = "component"

    def _lacks(self, capability: str, cannot: str) -> NotSupportedError:
        """The error a default raises for ``capability``: ``the 'x' task queue cannot <cannot> (no '<capability>' ...)``."""
        return NotSupportedError(
            f"the {self.backend_name!r} {self.kind} cannot {cannot} (no {capability!r} capability)"
        )

    #: constructor option -> ``Settings`` attribute used when the component's options
    #: do not give it (e.g. ``{"prefix": "key_prefix", "ttl": "event_ttl"}``).
    settings_options: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_settings(cls, component: ComponentSettings, settings: Settings) -> Self:
        """Build the component from resolved settings.

        The default passes ``url``, the component's ``options``, and for each
        entry of :attr:`settings_options` not among them, the named setting.
        Override only to derive something else (a default URL from ``base_dir``).
        """
        options = dict(component.options)
        for option, attribute in cls.settings_options.items():
            options.setdefault(option, getattr(settings, attribute))
        return cls(url=component.url, **options)  # type: ignore[call-arg]  # every backend's constructor takes url=

    async def connect(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Open connections and create schema; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Release connections; the component may not be used afterwards."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
