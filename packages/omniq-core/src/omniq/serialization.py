"""Serializers for task arguments and return values.

Every payload starts with its format tag: one byte holding the tag's
length, then the tag (``msgpack``, ``json``, ``dill``, ``cloudpickle``),
then the body. A reader therefore always knows how a payload was written,
and refuses a format the application did not allow: pickle-based formats
run arbitrary code when decoded, so a worker decodes them only when the
application chose one as its ``serializer`` or listed it in
``accept_serializers``.

msgspec MessagePack is the default: plain data, msgspec Structs,
dataclasses, datetimes, UUIDs, Decimals, enums, sets. msgpack and json
decode untyped, or into a given type (``typed_decoder``): a task's declared
parameter and return types (see ``omniq._typed``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import msgspec

from omniq.errors import ConfigurationError, PayloadTooLargeError, SerializationError

__all__ = [
    "BUILTIN_SERIALIZERS",
    "PICKLE_FORMATS",
    "JSONSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "SerializerRegistry",
    "call_arguments",
    "get_serializer",
]

#: formats that can execute code when decoded; refused unless enabled.
PICKLE_FORMATS = frozenset({"dill", "cloudpickle", "pickle"})


@runtime_checkable
class Serializer(Protocol):
    """Turns Python values into bytes and back. ``name`` is the format tag."""

    name: str

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raise :class:`SerializationError` when it cannot."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes produced by :meth:`dumps`."""
        ...


def _enc_hook(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, complex):
        return [value.real, value.imag]
    raise NotImplementedError(f"objects of type {type(value).__name__} are not supported")


class MsgpackSerializer:
    """msgspec MessagePack (the default).

    Decoded untyped, plain data and aware datetimes come back as
    themselves; Structs and dataclasses as dicts, naive datetimes, dates,
    UUIDs and Decimals as strings, sets and tuples as lists: MessagePack has
    no schema. Decoded into a type (``typed_decoder``), each comes back as
    that type.
    """

    name = "msgpack"

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        self._decoder = msgspec.msgpack.Decoder()

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` to MessagePack."""
        try:
            return self._encoder.encode(value)
        except (TypeError, NotImplementedError, OverflowError) as exc:
            raise SerializationError(f"cannot serialize with msgpack: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        """Decode MessagePack."""
        return self._decoder.decode(data)

    def typed_decoder(self, type_: Any) -> Callable[[bytes], Any]:
        """A function decoding MessagePack into ``type_`` (raises msgspec.ValidationError when it does not fit)."""
        return msgspec.msgpack.Decoder(type_).decode


class JSONSerializer:
    """msgspec JSON: readable payloads; decoded untyped, datetimes and UUIDs come back as strings."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
        self._decoder = msgspec.json.Decoder()

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` to JSON."""
        try:
            return self._encoder.encode(value)
        except (TypeError, NotImplementedError, OverflowError) as exc:
            raise SerializationError(f"cannot serialize with json: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        """Decode JSON."""
        return self._decoder.decode(data)

    def typed_decoder(self, type_: Any) -> Callable[[bytes], Any]:
        """A function decoding JSON into ``type_`` (raises msgspec.ValidationError when it does not fit)."""
        return msgspec.json.Decoder(type_).decode


class PickleSerializer:
    """dill or cloudpickle, for arbitrary objects (lambdas, closures).

    Only for payloads from producers you trust: decoding runs code.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        try:
            self._module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(
                f"OMNIQ_SERIALIZER={name!r} needs {name}: in OmniQ's clone, pip install './packages/omniq-core[{name}]'"
            ) from exc

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value``."""
        try:
            return bytes(self._module.dumps(value))
        except Exception as exc:
            raise SerializationError(f"cannot serialize with {self.name}: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        """Unpickle ``data`` (runs code; trusted producers only)."""
        return self._module.loads(data)


#: serializers that need no plugin.
BUILTIN_SERIALIZERS = ("msgpack", "json", "dill", "cloudpickle")


def get_serializer(name: str) -> Serializer:
    """Return a built-in serializer by name.

    Raises:
        ConfigurationError: unknown name, or its package is not installed.
    """
    if name == "msgpack":
        return MsgpackSerializer()
    if name == "json":
        return JSONSerializer()
    if name in ("dill", "cloudpickle"):
        return PickleSerializer(name)
    raise ConfigurationError(
        f"OMNIQ_SERIALIZER={name!r} is not valid: expected one of {', '.join(BUILTIN_SERIALIZERS)}"
    )


class SerializerRegistry:
    """Encodes with one format and decodes any allowed format, by tag.

    Args:
        default: the serializer used to write payloads.
        accept: extra format names a reader decodes. Pickle-based formats are
            refused unless they are ``default`` or listed here.
        max_payload_size: payloads larger than this are refused on write.
        extra: additional serializer instances (from plugins), by name.
    """

    def __init__(
        self,
        default: str | Serializer = "msgpack",
        accept: Iterable[str] = (),
        *,
        max_payload_size: int | None = None,
        extra: Iterable[Serializer] = (),
    ) -> None:
        self._instances: dict[str, Serializer] = {s.name: s for s in extra}
        self.default = default if isinstance(default, Serializer) else self._get(default)
        self._instances[self.default.name] = self.default
        self.allowed = frozenset({"msgpack", "json", self.default.name, *accept})
        self.max_payload_size = max_payload_size
        self._tag = _make_tag(self.default.name)

    def _get(self, name: str) -> Serializer:
        if name not in self._instances:
            self._instances[name] = get_serializer(name)
        return self._instances[name]

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` with the default serializer, prefixed by its tag.

        Raises:
            SerializationError: the value cannot be encoded.
            PayloadTooLargeError: the payload exceeds ``max_payload_size``.
        """
        data = self._tag + self.default.dumps(value)
        if self.max_payload_size is not None and len(data) > self.max_payload_size:
            raise PayloadTooLargeError(
                f"payload of {len(data)} bytes exceeds max_payload_size={self.max_payload_size} (OMNIQ_MAX_PAYLOAD_SIZE)"
            )
        return data

    def split(self, data: bytes) -> tuple[str, bytes]:
        """A tagged payload's format name and body.

        Raises:
            SerializationError: the payload has no valid tag, or uses a format
                this application does not accept (pickle-based formats are
                refused unless enabled).
        """
        if data[: len(self._tag)] == self._tag:  # the usual case: written in this app's own format
            return self.default.name, data[len(self._tag) :]
        if not data:
            raise SerializationError("empty payload")
        size = data[0]
        name = bytes(data[1 : 1 + size]).decode("ascii", "replace")
        if len(data) < 1 + size or not name.isidentifier():
            raise SerializationError("corrupted payload: no valid format tag")
        if name not in self.allowed:
            if name in PICKLE_FORMATS:
                raise SerializationError(
                    f"refusing a {name!r} payload: pickle-based formats run code when decoded; "
                    f"enable it with OMNIQ_SERIALIZER={name} or OMNIQ_ACCEPT_SERIALIZERS={name}"
                )
            raise SerializationError(f"payload format {name!r} is not accepted here")
        return name, bytes(data[1 + size :])

    def loads(self, data: bytes) -> Any:
        """Decode a tagged payload.

        Raises:
            SerializationError: the payload is corrupted, has an unknown tag,
                or uses a pickle-based format this application did not enable.
        """
        name, body = self.split(data)
        try:
            return self._get(name).loads(body)
        except SerializationError:
            raise
        except ConfigurationError as exc:
            raise SerializationError(str(exc)) from exc
        except Exception as exc:
            raise SerializationError(f"corrupted {name} payload: {exc}") from exc

    def typed_decoder(self, name: str, type_: Any) -> Callable[[bytes], Any] | None:
        """A function decoding bodies of format ``name`` into ``type_``; None if that format decodes only untyped."""
        make = getattr(self._get(name), "typed_decoder", None)
        return make(type_) if make is not None else None


def call_arguments(decoded: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A decoded call payload as ``(args, kwargs)``.

    Raises:
        SerializationError: it is not a pair of an array of arguments and a
            map of keyword arguments with string keys.
    """
    if type(decoded) in (list, tuple) and len(decoded) == 2:
        args, kwargs = decoded
        if type(args) in (list, tuple) and type(kwargs) is dict and (not kwargs or all(type(k) is str for k in kwargs)):
            return tuple(args), kwargs
    raise SerializationError(
        f"corrupted payload: expected [args, kwargs] (an array and a map with string keys), got {_describe(decoded)}"
    )


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _make_tag(name: str) -> bytes:
    encoded = name.encode("ascii")
    if len(encoded) > 255:
        raise ConfigurationError(f"serializer name {name!r} is too long")
    return bytes([len(encoded)]) + encoded
