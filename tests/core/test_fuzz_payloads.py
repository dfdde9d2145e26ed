"""Fuzzing payload decoding: whatever bytes a task carries, decoding raises only OmniQ's typed errors.

``SerializerRegistry.loads`` and the app's ``decode_args`` get random bytes,
valid payloads mutated (bytes flipped, cut, inserted), msgpack headers that
announce gigabytes, deep nesting, and pickle-tagged payloads while pickle is
off. Allowed outcomes: a value, or ``SerializationError``; for a function
with annotated parameters also ``TaskArgumentError`` (the arguments do not fit).
Never a raw msgspec, ``RecursionError``, ``MemoryError`` or other exception.

Bounded for CI (200 examples per test, a few seconds each). A long run (10,000 examples per
test take 1-5 minutes each on the 2-core box; ``--timeout=0`` lifts the suite's 300 s limit)::

    OMNIQ_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest tests/core/test_fuzz_payloads.py \\
        tests/core/test_fuzz_records.py -q -p no:cacheprovider --timeout=0 --hypothesis-show-statistics
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from omniq import AsyncOmniQ, Settings
from omniq.errors import SerializationError, TaskArgumentError
from omniq.models import Task
from omniq.serialization import SerializerRegistry
from tests.core.fuzzing import fuzz_settings

FUZZ = fuzz_settings(200)

TAGS = [b"msgpack", b"json", b"dill", b"cloudpickle", b"pickle", b"nope", b"", b"\xff\xfe", b"msg pack"]

#: plain data a payload may hold.
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@st.composite
def tagged(draw: st.DrawFn, body: st.SearchStrategy[bytes]) -> bytes:
    tag = draw(st.sampled_from(TAGS))
    size = draw(st.sampled_from([len(tag), len(tag), 0, 255, len(tag) + 1]))
    return bytes([size % 256]) + tag + draw(body)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few random edits: flips, cuts, insertions."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif out:
            out[at] = draw(st.sampled_from([0xC1, 0xDB, 0xDD, 0xDF, 0xC6, 0xFF, 0x00, 0x91]))
    return bytes(out)


def huge_headers() -> st.SearchStrategy[bytes]:
    """msgpack str/bin/array/map/ext headers announcing up to 4 GiB, then a few bytes."""
    return st.builds(
        lambda head, size, rest: bytes([head]) + size.to_bytes(4, "big") + rest,
        st.sampled_from([0xDB, 0xC6, 0xDD, 0xDF, 0xC9]),
        st.integers(2**16, 2**32 - 1),
        st.binary(max_size=16),
    )


def deep() -> st.SearchStrategy[bytes]:
    """Arrays or maps nested thousands deep, in msgpack and JSON."""
    return st.builds(
        lambda depth, kind: {
            "msgpack-array": b"\x91" * depth + b"\xc0",
            "msgpack-map": b"\x81\xa1k" * depth + b"\xc0",
            "json-array": b"[" * depth + b"]" * depth,
            "json-object": b'{"k":' * depth + b"null" + b"}" * depth,
        }[kind],
        st.integers(100, 20_000),
        st.sampled_from(["msgpack-array", "msgpack-map", "json-array", "json-object"]),
    )


REGISTRY = SerializerRegistry("msgpack")
JSON_REGISTRY = SerializerRegistry("json")


def _payloads(registry: SerializerRegistry) -> st.SearchStrategy[bytes]:
    valid = st.tuples(st.lists(values, max_size=4), st.dictionaries(st.text(max_size=8), values, max_size=3)).map(
        registry.dumps
    )
    bodies = st.binary(max_size=64) | huge_headers() | deep()
    return (
        st.binary(max_size=64)
        | tagged(bodies)
        | valid.flatmap(mutated)
        | bodies.map(lambda body: b"\x07msgpack" + body)
        | bodies.map(lambda body: b"\x04json" + body)
    )


def _loads_or_serialization_error(registry: SerializerRegistry, data: bytes) -> None:
    try:
        registry.loads(data)
    except SerializationError:
        pass


@FUZZ
@given(data=_payloads(REGISTRY))
def test_msgpack_registry_loads_raises_only_serialization_error(data: bytes) -> None:
    _loads_or_serialization_error(REGISTRY, data)


@FUZZ
@given(data=_payloads(JSON_REGISTRY))
def test_json_registry_loads_raises_only_serialization_error(data: bytes) -> None:
    _loads_or_serialization_error(JSON_REGISTRY, data)


@FUZZ
@given(kind=st.sampled_from(["dill", "cloudpickle", "pickle"]), body=st.binary(max_size=64))
def test_pickle_payloads_are_refused_while_pickle_is_off(kind: str, body: bytes) -> None:
    data = bytes([len(kind)]) + kind.encode() + body
    with pytest.raises(SerializationError, match="refusing"):
        REGISTRY.loads(data)


@pytest.fixture(scope="module")
def app() -> AsyncOmniQ:
    """An app (never connected: decoding needs no backend) with an untyped and a typed task."""
    app = AsyncOmniQ(Settings(backend="memory", url="memory://fuzz-payloads"))
    app.register(lambda *args, **kwargs: None, name="untyped")

    def typed(n: int, names: list[str], scale: float = 1.0) -> None:
        return None

    app.register(typed, name="typed")
    return app


@FUZZ
@given(data=_payloads(REGISTRY))
def test_decode_args_of_an_untyped_task_raises_only_serialization_error(app: AsyncOmniQ, data: bytes) -> None:
    try:
        args, kwargs = app.decode_args(Task(id="t", func="untyped", payload=data))
    except SerializationError:
        return
    assert type(args) is tuple and type(kwargs) is dict and all(type(k) is str for k in kwargs)


@FUZZ
@given(data=_payloads(REGISTRY))
def test_decode_args_of_a_typed_task_raises_only_typed_errors(app: AsyncOmniQ, data: bytes) -> None:
    try:
        args, kwargs = app.decode_args(Task(id="t", func="typed", payload=data))
    except (SerializationError, TaskArgumentError):
        return
    assert type(args) is tuple and type(kwargs) is dict
