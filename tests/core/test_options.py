"""The sixteen enqueue options are declared once (``omniq.EnqueueOptions``); every surface that takes them agrees.

Two typed views are written out, because mypy and IDEs cannot see a
signature derived at run time: ``AsyncOmniQ.enqueue`` and ``OmniQ.enqueue``
take the options as keyword parameters (their ``**kwargs`` are the task's
own arguments), and ``TaskOptions`` (a TypedDict) types every ``**options``
through ``Unpack``. These tests hold both to the declaration: same names,
same order, same types, default None. At run time the decorator,
``handle.options()`` and ``enqueue_many`` go through
``EnqueueOptions.from_kwargs`` and so accept exactly the declared names.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest

from omniq import AsyncOmniQ, ConfigurationError, EnqueueOptions, OmniQ
from omniq._options import OPTION_NAMES, TaskOptions
from omniq._tasks import TaskFunction
from omniq.sync import SyncTaskFunction

pytestmark = pytest.mark.anyio

DECLARED = [(f.name, f.type) for f in dataclasses.fields(EnqueueOptions)]


#: keyword parameters of enqueue that say how this call is made, not what the task is (no EnqueueOptions field).
CALL_PARAMETERS = {"connection"}


def _options_of(method: Callable[..., Any]) -> list[tuple[str, Any]]:
    params = [p for p in inspect.signature(method).parameters.values() if p.name not in CALL_PARAMETERS]
    for p in params:
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            assert p.default is None, f"{method.__qualname__}: option {p.name} must default to None"
    return [(p.name, p.annotation) for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def test_there_are_sixteen_options_and_the_names_derive_from_the_declaration() -> None:
    assert len(DECLARED) == 16
    assert OPTION_NAMES == tuple(name for name, _ in DECLARED)


def test_the_typed_dict_of_options_is_the_declaration() -> None:
    hints = typing.get_type_hints(EnqueueOptions)
    assert list(typing.get_type_hints(TaskOptions).items()) == [(name, hints[name]) for name, _ in DECLARED]
    assert TaskOptions.__required_keys__ == frozenset()


@pytest.mark.parametrize(
    "method",
    [
        AsyncOmniQ.task,
        AsyncOmniQ.enqueue_many,
        OmniQ.task,
        OmniQ.enqueue_many,
        TaskFunction.options,
        SyncTaskFunction.options,
    ],
    ids=lambda method: method.__qualname__,
)
def test_every_options_parameter_is_typed_by_the_typed_dict(method: Callable[..., Any]) -> None:
    (options,) = [p for p in inspect.signature(method).parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    assert options.annotation == "Unpack[TaskOptions]"


def _type_checked_calls(app: AsyncOmniQ, sync: OmniQ, handle: TaskFunction[[int], int]) -> None:
    """Never run: mypy checks it (and warns about an ignore that no longer matches an error)."""
    app.task(queue="q", priority=1, depends_on=["a"])
    sync.task(delay=1.5, cron=None)
    handle.options(eta=None, ttl=3)
    app.task(colour="red")  # type: ignore[call-overload]
    handle.options(priority="high")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", [AsyncOmniQ.enqueue, OmniQ.enqueue], ids=["AsyncOmniQ", "OmniQ"])
def test_enqueue_parameters_are_the_declared_options(method: Callable[..., Any]) -> None:
    assert _options_of(method) == DECLARED


async def test_decorator_options_and_enqueue_many_accept_every_declared_option_and_nothing_else(
    make_app: Any,
) -> None:
    values: dict[str, Any] = {"queue": "q", "priority": 3, "max_retries": 1, "depends_on": "a", "unique_key": None}
    async with make_app() as app:

        @app.task(**values)
        def f() -> None: ...

        assert f.default_options == EnqueueOptions(**values)
        assert f.options(priority=4).enqueue is not None
        for bad in (lambda: app.task(colour="red"), lambda: f.options(colour="red")):
            with pytest.raises(ConfigurationError, match="colour") as info:
                bad()
            assert all(name in str(info.value) for name in OPTION_NAMES)
        with pytest.raises(ConfigurationError, match="colour"):
            await app.enqueue_many(f, [()], colour="red")


async def test_options_from_every_surface_reach_the_task_record(make_app: Any) -> None:
    async with make_app() as app:

        @app.task(queue="mail", priority=2)
        def f(x: int) -> int:
            return x

        first = await app.enqueue(f, 1, depends_on="dep-1")
        bound = await f.options(priority=5, depends_on=["dep-1", "dep-2"]).enqueue(2)
        (many,) = await app.enqueue_many(f, [(3,)], max_retries=7)
        tasks = {t.id: t for t in await app.list_tasks(limit=10)}
        assert (tasks[first].queue, tasks[first].priority, tasks[first].depends_on) == ("mail", 2, ("dep-1",))
        assert (tasks[bound].priority, tasks[bound].depends_on) == (5, ("dep-1", "dep-2"))
        assert (tasks[many].queue, tasks[many].max_retries) == ("mail", 7)


def test_depends_on_is_kept_as_a_tuple_so_options_stay_hashable() -> None:
    assert EnqueueOptions(depends_on="a").depends_on == ("a",)
    assert EnqueueOptions(depends_on=["a", "b"]).depends_on == ("a", "b")
    assert EnqueueOptions(depends_on=iter(["a"])).depends_on == ("a",)
    assert hash(EnqueueOptions(depends_on=["a"])) == hash(EnqueueOptions(depends_on=("a",)))


def test_merged_keeps_defaults_the_other_options_do_not_set() -> None:
    defaults = EnqueueOptions(queue="mail", priority=1)
    assert defaults.merged(EnqueueOptions(priority=9)) == EnqueueOptions(queue="mail", priority=9)
    assert defaults.merged(EnqueueOptions()) == defaults
