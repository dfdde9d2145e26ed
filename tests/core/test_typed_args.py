"""Arguments arrive, and results come back, as the types the task function declares.

Every case goes through a real enqueue (the payload is stored encoded), a real
in-process worker pool and ``get_result``, for msgpack, json, a pickle format
and a plugin's format. Real worker processes on SQLite and the servers:
tests/faults/test_typed_args.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import types
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Optional, Union

import msgspec
import pytest

from omniq import OmniQ, SerializationError, TaskArgumentError, TaskStatus, hookimpl, plugins
from omniq.hookspecs import SerializerSpec
from omniq.models import Task

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Shape:
    name: str
    corners: list[Point]
    made: dt.datetime


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Item(msgspec.Struct):
    id: uuid.UUID
    price: Decimal
    tags: frozenset[str] = frozenset()


UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
NAIVE = dt.datetime(2024, 2, 29, 23, 59, 58, 123456)

#: id -> (annotation, a value of it): each must arrive equal and of the same type.
CASES: dict[str, tuple[Any, Any]] = {
    "naive datetime": (dt.datetime, NAIVE),
    "aware datetime": (dt.datetime, NAIVE.replace(tzinfo=dt.timezone.utc)),
    "date": (dt.date, dt.date(2024, 2, 29)),
    "time": (dt.time, dt.time(12, 30, 1)),
    "timedelta": (dt.timedelta, dt.timedelta(days=1, seconds=5)),
    "Decimal": (Decimal, Decimal("1234.5678")),
    "Enum": (Color, Color.BLUE),
    "IntEnum": (Level, Level.HIGH),
    "set": (set[int], {1, 2, 3}),
    "frozenset": (frozenset[str], frozenset({"a", "b"})),
    "tuple": (tuple[int, str], (1, "one")),
    "variadic tuple": (tuple[int, ...], (1, 2, 3)),
    "dataclass": (Point, Point(1, 2)),
    "nested dataclass": (Shape, Shape("sq", [Point(0, 0), Point(1, 1)], NAIVE)),
    "UUID": (uuid.UUID, UID),
    "Struct": (Item, Item(id=UID, price=Decimal("9.99"), tags=frozenset({"x"}))),
    "list[UUID]": (list[uuid.UUID], [UID, uuid.UUID(int=7)]),
    "dict[str, Decimal]": (dict[str, Decimal], {"a": Decimal("1.1"), "b": Decimal("-2")}),
    "dict[int, Point]": (dict[int, Point], {1: Point(1, 1)}),
    "Optional (value)": (Optional[Point], Point(3, 4)),  # noqa: UP045  # typing's spelling, on purpose
    "Optional (None)": (Optional[Point], None),  # noqa: UP045
    "Union (int)": (Union[int, str], 5),  # noqa: UP007
    "Union (str)": (Union[int, str], "five"),  # noqa: UP007
    "X | None": (uuid.UUID | None, UID),
    "X | Y": (Point | list[Point], [Point(5, 6)]),
    "bytes": (bytes, b"\x00\xffbinary"),
    "nested containers": (dict[str, list[tuple[uuid.UUID, Decimal]]], {"k": [(UID, Decimal("0.5"))]}),
}

SERIALIZERS = ["msgpack", "json", "cloudpickle", "plainjson"]


class PlainJSON:
    """A plugin's format with no typed decoding (stdlib json of plain data): its data is converted."""

    name = "plainjson"

    def dumps(self, value: Any) -> bytes:
        return json.dumps(msgspec.to_builtins(value)).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


@pytest.fixture(autouse=True, scope="module")
def _plainjson_plugin() -> Iterator[None]:
    @hookimpl
    def omniq_serializers() -> list[SerializerSpec]:
        return [SerializerSpec(name="plainjson", path=f"{__name__}:PlainJSON", distribution="test")]

    plugins.register(types.SimpleNamespace(omniq_serializers=omniq_serializers), name="plainjson-test")
    yield
    plugins.get_plugin_manager().unregister(name="plainjson-test")


def typed(annotation: Any, sink: list[Any]) -> Any:
    """A task function whose parameter and return value are annotated ``annotation``."""

    def receive(value: Any) -> Any:
        sink.append(value)
        return value

    receive.__annotations__ = {"value": annotation, "return": annotation}
    return receive


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, msgspec.Struct):
        return all(same(getattr(a, f), getattr(b, f)) for f in a.__struct_fields__)
    return bool(a == b)


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("case", list(CASES))
async def test_argument_and_result_arrive_as_declared(make_app: Any, case: str, serializer: str) -> None:
    annotation, value = CASES[case]
    received: list[Any] = []
    async with make_app(serializer=serializer) as app:
        task = app.register(typed(annotation, received), name="receive")
        by_position = await task.enqueue(value)
        by_keyword = await task.enqueue(value=value)
        await app.worker(burst=True).start()
        assert len(received) == 2
        for arrived in received:
            assert same(arrived, value), f"{arrived!r} arrived for {value!r}"
        for task_id in (by_position, by_keyword):
            result = await app.get_result(task_id)
            assert result is not None and result.status is TaskStatus.SUCCEEDED, result
            assert same(result.result, value), f"get_result gave {result.result!r} for {value!r}"


def test_naive_datetime_round_trips_naive_and_equal(make_settings: Any) -> None:
    received: list[Any] = []
    with OmniQ(make_settings()) as app:  # through the sync façade too
        task = app.register(typed(dt.datetime, received), name="receive")
        task_id = task.enqueue(NAIVE)
        app.run_worker(burst=True)
        result = app.get_result(task_id)
    assert received == [NAIVE] and received[0].tzinfo is None
    assert result is not None and result.result == NAIVE and result.result.tzinfo is None


async def test_unannotated_and_any_parameters_arrive_as_decoded(make_app: Any) -> None:
    received: list[Any] = []
    async with make_app() as app:

        @app.task
        def plain(a, b: Any, c: object, d: int) -> None:
            received.extend([a, b, c, d])

        await plain.enqueue(Point(1, 2), {1, 2}, UID, 4)
        await app.worker(burst=True).start()
        assert received == [{"x": 1, "y": 2}, [1, 2], str(UID), 4]
        assert plain.types is not None and set(plain.types.params) == {"d"}

        @app.task
        def untyped(a, b=None):
            return a

        @app.task
        def returns_none(a: Any) -> None:
            return None

        assert untyped.types is None and returns_none.types is None  # they pay nothing


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_wrong_types_are_refused_at_enqueue_and_nothing_is_stored(make_app: Any, serializer: str) -> None:
    async with make_app(serializer=serializer) as app:

        @app.task(name="add")
        def add(a: int, b: int) -> int:
            return a + b

        @app.task(name="draw")
        def draw(shape: Shape, when: dt.datetime, *extra: Decimal, **labels: Color) -> None:
            return None

        with pytest.raises(TaskArgumentError, match=r"task add: argument 'a' does not match its annotation") as info:
            await add.enqueue("x", "y")
        assert isinstance(info.value, TypeError) and "Expected `int`, got `str`" in str(info.value)
        with pytest.raises(TaskArgumentError, match="argument 'b'"):
            await app.enqueue("add", 1, b="y")
        with pytest.raises(TaskArgumentError, match="argument 'a'"):
            await add.enqueue(True, 2)  # a bool is not an int
        with pytest.raises(TaskArgumentError, match="argument 'b'"):
            await app.enqueue_many(add, [(1, 2), (3, "4")])
        with pytest.raises(TaskArgumentError, match=r"argument 'shape'.*at `shape.corners\[0\].x`"):
            await draw.enqueue(Shape("s", [Point("0", 0)], NAIVE), NAIVE)  # type: ignore[arg-type]
        with pytest.raises(TaskArgumentError, match=r"argument '\*extra\[1\]'"):
            await draw.enqueue(Shape("s", [], NAIVE), NAIVE, Decimal(1), [1])
        with pytest.raises(TaskArgumentError, match="argument 'colour'"):
            await draw.enqueue(Shape("s", [], NAIVE), NAIVE, colour="green")
        with pytest.raises(TaskArgumentError, match="bad arguments for task add"):
            await add.enqueue(1)
        assert await app.count_tasks() == 0
        # the same calls, well typed, are taken
        await add.enqueue(1, b=2)
        await app.enqueue_many(add, [(1, 2), (3, 4)])
        await draw.enqueue(Shape("s", [Point(0, 0)], NAIVE), NAIVE, Decimal(1), Decimal("2.5"), colour=Color.RED)
        assert await app.count_tasks() == 4


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
async def test_floats_ints_and_non_finite_values(make_app: Any, serializer: str) -> None:
    received: list[Any] = []
    async with make_app(serializer=serializer) as app:

        @app.task(name="scale")
        def scale(x: float, n: int) -> None:
            received.append((x, n))

        await scale.enqueue(3, 2)  # an int is a float: it arrives as one
        await scale.enqueue(2.5, n=1)
        if serializer == "json":  # json writes nan and inf as null, which is not a float: refused, not lost
            with pytest.raises(TaskArgumentError, match="argument 'x'"):
                await scale.enqueue(float("nan"), 1)
            with pytest.raises(TaskArgumentError, match="argument 'x'"):
                await scale.enqueue(float("inf"), 1)
        else:
            await scale.enqueue(float("inf"), 1)
        await app.worker(burst=True).start()
        # sync tasks run side by side in threads: compare what arrived, not the order it arrived in
        arrived = sorted(((type(x).__name__, x, n) for x, n in received), key=lambda item: item[1])
        expected = [("float", 2.5, 1), ("float", 3.0, 2)]
        assert arrived == (expected if serializer == "json" else [*expected, ("float", float("inf"), 1)])


async def test_pickle_arguments_must_already_be_their_type(make_app: Any) -> None:
    async with make_app(serializer="cloudpickle") as app:
        app.register(typed(dt.datetime, []), name="receive")
        with pytest.raises(TaskArgumentError, match="argument 'value'"):
            await app.enqueue("receive", NAIVE.isoformat())  # pickle would deliver the string itself
        assert await app.count_tasks() == 0


async def test_a_payload_that_does_not_fit_fails_the_task_once_naming_the_argument(make_app: Any) -> None:
    async with make_app() as producer, make_app() as worker_app:
        # the producer does not know the function, so nothing checks at enqueue
        task_id = await producer.enqueue("add", "x", "y", max_retries=3)

        @worker_app.task(name="add")
        def add(a: int, b: int) -> int:
            return a + b

        await worker_app.worker(burst=True).start()
        result = await producer.get_result(task_id)
        assert result is not None and result.status is TaskStatus.FAILED
        assert result.attempts == 1  # not retried: it cannot succeed
        assert result.error is not None and result.error.type == "TaskArgumentError"
        assert "argument 'a'" in result.error.message and not result.error.retryable


@pytest.mark.parametrize("pool", ["async", "thread", "process"])
async def test_every_pool_receives_the_declared_types(make_app: Any, pool: str) -> None:
    async with make_app() as app:
        app.register(kinds, name="kinds")
        task_id = await app.enqueue(
            "kinds", NAIVE, Point(1, 2), {UID}, Color.RED, items=[Item(id=UID, price=Decimal(1))]
        )
        await app.worker(pool=pool, burst=True).start()
        result = await app.get_result(task_id)
        assert result is not None and result.status is TaskStatus.SUCCEEDED, result
        assert result.result == ["datetime", "Point", "set", "UUID", "Color", "list", "Item", "Decimal"]


def kinds(when: dt.datetime, point: Point, ids: set[uuid.UUID], color: Color, *, items: list[Item]) -> list[str]:
    """Module level, so that a forked process-pool child finds it."""
    names = [type(v).__name__ for v in (when, point, ids, next(iter(ids)), color, items, items[0], items[0].price)]
    return names


async def test_results_are_typed_only_for_registered_functions(make_app: Any) -> None:
    async with make_app() as worker_app, make_app() as reader:

        @worker_app.task(name="when")
        def when() -> dt.datetime:
            return NAIVE

        @worker_app.task(name="liar")
        def liar() -> int:
            return "not an int"  # type: ignore[return-value]

        when_id = await when.enqueue()
        liar_id = await liar.enqueue()
        await worker_app.worker(burst=True).start()
        typed_result = await worker_app.get_result(when_id)
        assert typed_result is not None and typed_result.result == NAIVE
        untyped_result = await reader.get_result(when_id)  # this app has no task "when": untyped, as decoded
        assert untyped_result is not None and untyped_result.result == NAIVE.isoformat()
        lied = await worker_app.get_result(liar_id)  # does not fit its annotation: given as decoded
        assert lied is not None and lied.result == "not an int"


async def test_unresolvable_or_unsupported_annotations_stay_untyped(make_app: Any) -> None:
    class Opaque:
        pass

    async with make_app() as app:

        def f(
            a: NoSuchName,  # type: ignore[name-defined]  # noqa: F821
            b: complex,
            c: Opaque,
            d: list[Opaque],
            e: str | dt.datetime,  # a union msgspec refuses (two types that travel as strings)
            g: Point | Item,  # and another (two object-like types)
            f: int,
        ) -> None:
            return None

        task = app.register(f, name="f")  # registration never fails on annotations
        assert task.types is not None and set(task.types.params) == {"f"}
        with pytest.raises(TaskArgumentError, match="argument 'f'"):
            await task.enqueue(1, 2, 3, 4, "e", {}, "not an int")
        await task.enqueue(1, 2, 3, 4, "e", {}, 6)
        assert await app.count_tasks() == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"\x07msgpack\x05",  # a bare number
        b"\x04json[]",  # an empty array
        b"\x04json[1,{}]",  # args is not an array
        b"\x04json[[],{},3]",  # three items
        b"\x04json[[],[]]",  # kwargs is not a map
        b"\x07msgpack" + msgspec.msgpack.encode([[], {1: 2}]),  # a keyword that is not a string
    ],
)
async def test_decode_args_refuses_anything_but_an_args_kwargs_pair(make_app: Any, payload: bytes) -> None:
    async with make_app() as app:
        app.register(lambda *a, **k: None, name="anything")
        with pytest.raises(SerializationError, match=r"expected \[args, kwargs\]"):
            app.decode_args(Task(id="t", func="anything", payload=payload))
        with pytest.raises(SerializationError, match=r"expected \[args, kwargs\]"):
            app.decode_args(Task(id="t", func="unregistered", payload=payload))
        task = app._build_task("anything", (), {}, app.functions["anything"].default_options)
        task.payload = payload
        task_id = await app.task_queue.enqueue(task)
        await app.worker(burst=True).start()
        result = await app.get_result(task_id)
        assert result is not None and result.status is TaskStatus.FAILED
        assert result.error is not None and result.error.type == "SerializationError" and result.attempts == 1
