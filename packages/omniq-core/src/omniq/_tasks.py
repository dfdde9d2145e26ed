"""Task functions: the registry of callables a worker may run, and the typed handle ``@app.task`` returns."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from typing_extensions import ParamSpec

from omniq.errors import ConfigurationError

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ

__all__ = ["EnqueueOptions", "TaskFunction", "task_name"]

P = ParamSpec("P")
R = TypeVar("R")

#: option names accepted by enqueue, the decorator and TaskFunction.options().
OPTION_NAMES = (
    "eta",
    "delay",
    "interval",
    "cron",
    "max_retries",
    "timeout",
    "ttl",
    "result_ttl",
    "queue",
    "priority",
    "unique_key",
    "depends_on",
)


@dataclasses.dataclass(frozen=True)
class EnqueueOptions:
    """Per-task options; None means "use the next default" (decorator, then settings)."""

    eta: datetime | None = None
    delay: float | timedelta | None = None
    interval: float | timedelta | None = None
    cron: str | None = None
    max_retries: int | None = None
    timeout: float | timedelta | None = None
    ttl: float | timedelta | None = None
    result_ttl: float | timedelta | None = None
    queue: str | None = None
    priority: int | None = None
    unique_key: str | None = None
    depends_on: tuple[str, ...] | None = None

    def merged(self, other: EnqueueOptions) -> EnqueueOptions:
        """Options of ``self`` overridden by the ones ``other`` sets."""
        changes = {
            f.name: getattr(other, f.name) for f in dataclasses.fields(other) if getattr(other, f.name) is not None
        }
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> EnqueueOptions:
        """Build from a dict, rejecting unknown names with a clear error."""
        unknown = set(options) - set(OPTION_NAMES)
        if unknown:
            raise ConfigurationError(
                f"unknown task option(s) {', '.join(sorted(unknown))}: expected any of {', '.join(OPTION_NAMES)}"
            )
        depends = options.get("depends_on")
        if depends is not None:
            options = {**options, "depends_on": (depends,) if isinstance(depends, str) else tuple(depends)}
        return cls(**options)


def task_name(func: Callable[..., Any]) -> str:
    """The default registered name of a function: ``module.qualname``.

    A function defined in a module run with ``python -m pkg.mod`` is named
    after ``pkg.mod``, not ``__main__``, so a worker importing ``pkg.mod``
    finds it. Scripts run by path have no such name: give their tasks an
    explicit ``name=`` when workers run in other processes.
    """
    module = getattr(func, "__module__", None) or "__main__"
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
    return f"{module}.{getattr(func, '__qualname__', getattr(func, '__name__', repr(func)))}"


class TaskFunction(Generic[P, R]):
    """A registered task: call it to run it here, ``.enqueue`` to run it on a worker.

    ``await send_email.enqueue("a@example.com", subject="hi")`` type-checks
    against ``send_email``'s own signature.
    """

    def __init__(self, app: AsyncOmniQ, func: Callable[P, R], name: str, options: EnqueueOptions) -> None:
        self.app = app
        self.func = func
        self.name = name
        self.default_options = options
        self.is_async = inspect.iscoroutinefunction(func)
        try:
            self.signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):  # some builtins have no signature
            self.signature = None
        self._good_shapes: set[object] = set()
        functools.update_wrapper(self, func)  # type: ignore[arg-type]  # copies __doc__, __name__...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function directly, in this process."""
        return self.func(*args, **kwargs)

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError now if the call could never bind, rather than failing on a worker.

        Whether a call binds depends only on its shape (how many positional
        arguments, which keyword names), so each shape is checked once.
        """
        if self.signature is None:
            return
        shape = (len(args), frozenset(kwargs)) if kwargs else len(args)
        if shape in self._good_shapes:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"bad arguments for task {self.name}: {exc}") from None
        if len(self._good_shapes) < 64:
            self._good_shapes.add(shape)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[str]:
        """Enqueue a call with the decorator's options; returns the task id."""
        return self.app._enqueue_call(self.name, args, kwargs, self.default_options)

    def options(self, **options: Any) -> BoundTask[P]:
        """Return a handle whose ``enqueue`` uses extra options (``delay``, ``queue``, ...)."""
        return BoundTask(self, self.default_options.merged(EnqueueOptions.from_kwargs(options)))

    def __repr__(self) -> str:
        return f"<TaskFunction {self.name}>"


class BoundTask(Generic[P]):
    """A task function with options fixed, from :meth:`TaskFunction.options`."""

    def __init__(self, task: TaskFunction[P, Any], options: EnqueueOptions) -> None:
        self._task = task
        self._options = options

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[str]:
        """Enqueue a call with these options; returns the task id."""
        return self._task.app._enqueue_call(self._task.name, args, kwargs, self._options)
