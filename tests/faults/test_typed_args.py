"""Typed arguments and results through a real worker process (``omniq worker typedapp:make --burst``).

Every multi-process backend (SQLite, files, and the servers); the thread and
process pools and the json serializer on SQLite. The producer is this test's
own app, with the same functions registered.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from omniq import TaskArgumentError, TaskStatus

from .conftest import HERE, Cluster
from .typedapp import Color, Everything, Item, Point, register

UID = uuid.UUID("12345678-1234-5678-1234-567812345678")

#: one value of each kind, as keyword arguments of typedapp.kinds / typedapp.echo.
VALUES: dict[str, Any] = {
    "when": dt.datetime(2024, 2, 29, 23, 59, 58, 123456),  # naive
    "day": dt.date(2024, 2, 29),
    "amount": Decimal("1234.5678"),
    "color": Color.BLUE,
    "tags": {"a", "b"},
    "pair": (1, "one"),
    "point": Point(1, 2),
    "uid": UID,
    "item": Item(id=UID, price=Decimal("9.99")),
    "ids": [UID, uuid.UUID(int=7)],
    "prices": {"a": Decimal("1.10")},
    "maybe": Point(3, 4),
    "either": "five",
}

KINDS = {
    "when": "datetime",
    "day": "date",
    "amount": "Decimal",
    "color": "Color",
    "tags": "set",
    "pair": "tuple",
    "point": "Point",
    "uid": "UUID",
    "item": "Item",
    "ids": "list",
    "prices": "dict",
    "maybe": "Point",
    "either": "str",
    "item.id": "UUID",
    "item.price": "Decimal",
    "ids[0]": "UUID",
    "prices[a]": "Decimal",
    "tags[0]": "str",
}


def run_worker(cluster: Cluster, *args: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "omniq", "worker", "typedapp:make", "--burst", *args],
        env=cluster.env,
        cwd=str(HERE),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def check_round_trip(cluster: Cluster, *worker_args: str) -> None:
    with cluster.producer() as app:
        register(app)
        positional = app.enqueue("kinds", *VALUES.values())
        keywords = app.enqueue("kinds", **VALUES)
        echoed = app.enqueue("echo", **VALUES)
        run_worker(cluster, *worker_args)
        for task_id in (positional, keywords):
            result = app.get_result(task_id)
            assert result is not None and result.status is TaskStatus.SUCCEEDED, result
            assert result.result == KINDS
        result = app.get_result(echoed)
        assert result is not None and result.status is TaskStatus.SUCCEEDED, result
        assert isinstance(result.result, Everything)  # the declared return type, decoded as such
        assert result.result == Everything(**VALUES)
        assert result.result.when.tzinfo is None and isinstance(result.result.item.price, Decimal)


def test_arguments_arrive_as_declared_in_a_worker_process(cluster: Cluster) -> None:
    check_round_trip(cluster)


def test_a_wrong_typed_enqueue_stores_nothing(cluster: Cluster) -> None:
    with cluster.producer() as app:
        register(app)
        with pytest.raises(TaskArgumentError, match="argument 'a'"):
            app.enqueue("add", "x", "y")
        with pytest.raises(TaskArgumentError, match=r"argument 'item'.*at `item.price`"):
            app.enqueue("kinds", **{**VALUES, "item": {"id": str(UID), "price": [1]}})
        assert app.count_tasks() == 0


@pytest.mark.parametrize(
    ("backend_env", "worker_args", "serializer"),
    [
        ("sqlite", ("--pool", "thread"), "msgpack"),
        ("sqlite", ("--pool", "process"), "msgpack"),
        ("sqlite", (), "json"),
    ],
    indirect=["backend_env"],
)
def test_every_pool_and_serializer(
    backend_env: dict[str, str], worker_args: tuple[str, ...], serializer: str, tmp_path: Path
) -> None:
    cluster = Cluster({**backend_env, "OMNIQ_SERIALIZER": serializer}, tmp_path)
    try:
        check_round_trip(cluster, *worker_args)
    finally:
        cluster.stop_all()
