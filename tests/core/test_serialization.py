"""Serializers: round trips, format tags, refusal of pickled payloads, corruption, size limits."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from omniq import PayloadTooLargeError, SerializationError
from omniq.serialization import SerializerRegistry, get_serializer


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_msgpack_is_the_default_and_round_trips_plain_data() -> None:
    registry = SerializerRegistry()
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    value = {"n": 1, "f": 1.5, "s": "é", "b": b"\x00\xff", "l": [1, [2]], "when": when, "none": None}
    data = registry.dumps(value)
    assert data.startswith(b"\x07msgpack")
    assert registry.loads(data) == value


def test_msgpack_encodes_dataclasses_and_uuids() -> None:
    import uuid

    registry = SerializerRegistry()
    ident = uuid.uuid4()
    assert registry.loads(registry.dumps([Point(1, 2), ident])) == [{"x": 1, "y": 2}, str(ident)]


def test_json_is_tagged_and_readable() -> None:
    registry = SerializerRegistry("json")
    data = registry.dumps({"a": [1, 2]})
    assert data == b"\x04json" + b'{"a":[1,2]}'
    assert registry.loads(data) == {"a": [1, 2]}


def test_unserializable_value_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="msgpack"):
        SerializerRegistry().dumps(object())


@pytest.mark.parametrize("name", ["dill", "cloudpickle"])
def test_pickled_payloads_are_refused_unless_enabled(name: str) -> None:
    writer = SerializerRegistry(name)
    payload = writer.dumps(lambda x: x + 1)
    with pytest.raises(SerializationError, match="refusing"):
        SerializerRegistry().loads(payload)
    assert SerializerRegistry(accept=[name]).loads(payload)(1) == 2
    assert writer.loads(payload)(2) == 3


@pytest.mark.parametrize("data", [b"", b"\x07msgpa", b"\x07msgpack\xc1\xc1", b"\x03zzz{}", b"\xff" * 4])
def test_corrupted_payloads_raise_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        SerializerRegistry().loads(data)


def test_oversized_payload_is_refused() -> None:
    registry = SerializerRegistry(max_payload_size=100)
    with pytest.raises(PayloadTooLargeError, match="max_payload_size"):
        registry.dumps("x" * 1000)


def test_unknown_serializer_name() -> None:
    with pytest.raises(ValueError, match="msgpack, json"):
        get_serializer("yaml")
