"""The app test_typed_args.py runs in real worker processes: ``omniq worker typedapp:make``.

Its tasks are annotated with every kind of type msgpack and json alone would
change (naive datetimes, dates, Decimals, enums, sets, tuples, dataclasses,
UUIDs, Structs, nested containers, Optional / Union). ``kinds`` reports the
type of each value as it arrived; ``echo`` returns them all in a Struct, its
declared return type.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any, Optional, Union

import msgspec

from omniq import OmniQ


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(msgspec.Struct):
    id: uuid.UUID
    price: Decimal


class Everything(msgspec.Struct):
    when: dt.datetime
    day: dt.date
    amount: Decimal
    color: Color
    tags: set[str]
    pair: tuple[int, str]
    point: Point
    uid: uuid.UUID
    item: Item
    ids: list[uuid.UUID]
    prices: dict[str, Decimal]
    maybe: Optional[Point]  # noqa: UP045  # typing's spelling, on purpose
    either: Union[int, str]  # noqa: UP007


def kinds(
    when: dt.datetime,
    day: dt.date,
    amount: Decimal,
    color: Color,
    tags: set[str],
    pair: tuple[int, str],
    point: Point,
    uid: uuid.UUID,
    item: Item,
    ids: list[uuid.UUID],
    prices: dict[str, Decimal],
    maybe: Optional[Point] = None,  # noqa: UP045
    either: Union[int, str] = 0,  # noqa: UP007
) -> dict[str, str]:
    """The type of every argument (and of the values inside the containers) as it arrived."""
    arrived: dict[str, Any] = dict(locals())
    names = {name: type(value).__name__ for name, value in arrived.items()}
    names["item.id"] = type(item.id).__name__
    names["item.price"] = type(item.price).__name__
    names["ids[0]"] = type(ids[0]).__name__
    names["prices[a]"] = type(prices["a"]).__name__
    names["tags[0]"] = type(next(iter(tags))).__name__
    return names


def echo(
    when: dt.datetime,
    day: dt.date,
    amount: Decimal,
    color: Color,
    tags: set[str],
    pair: tuple[int, str],
    point: Point,
    uid: uuid.UUID,
    item: Item,
    ids: list[uuid.UUID],
    prices: dict[str, Decimal],
    maybe: Optional[Point] = None,  # noqa: UP045
    either: Union[int, str] = 0,  # noqa: UP007
) -> Everything:
    """Every argument, returned in the declared return type."""
    return Everything(**locals())


def add(a: int, b: int) -> int:
    return a + b


def register(app: OmniQ) -> None:
    """Register the tasks under fixed names (the producer registers them too, to check and to type)."""
    for func in (kinds, echo, add):
        app.register(func, name=func.__name__)


def make() -> OmniQ:
    """The worker's app, configured by the OMNIQ_* variables."""
    app = OmniQ()
    register(app)
    return app
