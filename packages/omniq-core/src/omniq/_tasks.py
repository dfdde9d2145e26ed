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

from omniq._typed import CallTypes, FunctionTypes, function_types
from omniq.errors import ConfigurationError, TaskArgumentError
from omniq.serialization import call_arguments

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ

__all__ = ["EnqueueOptions", "TaskFunction", "task_name"]

P = ParamSpec("P")
R = TypeVar("R")

_NEW_SHAPE: Any = object()

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
    against ``send_email``'s own signature. Arguments of annotated
    parameters are checked against their annotations at enqueue and reach
    the function as the declared types (see ``omniq._typed``).
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
        # call shapes seen to bind -> their declared types (None: no typed argument)
        self._shapes: dict[object, CallTypes | None] = {}
        functools.update_wrapper(self, func)  # copies __doc__, __name__...

    @functools.cached_property
    def types(self) -> FunctionTypes | None:
        """The function's decodable annotations (None: none), resolved at first use."""
        return function_types(self.name, self.func, self.signature)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function directly, in this process."""
        return self.func(*args, **kwargs)

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any], payload: bytes | None = None) -> None:
        """Raise TaskArgumentError now if a worker could not run the call, rather than failing there.

        With the call's encoded ``payload``, the arguments of annotated
        parameters are checked too: decoded as a worker will decode them,
        each must fit its annotation.
        """
        call = self._call_types(args, kwargs)
        if call is not None and payload is not None:
            call.check(self.app.serializer, payload, args, kwargs)

    def _call_types(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallTypes | None:
        """The declared types of a call (None: no typed argument); TaskArgumentError if it cannot bind.

        Both depend only on the call's shape (how many positional arguments,
        which keyword names), so each shape is bound and typed once.
        """
        if self.signature is None:
            return None
        shape = (len(args), frozenset(kwargs)) if kwargs else len(args)
        call = self._shapes.get(shape, _NEW_SHAPE)
        if call is not _NEW_SHAPE:
            return call  # type: ignore[no-any-return]
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskArgumentError(f"bad arguments for task {self.name}: {exc}") from None
        call = self.types.call(len(args), tuple(kwargs)) if self.types is not None else None
        if len(self._shapes) < 64:
            self._shapes[shape] = call
        return call

    def load_arguments(self, payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode a call's ``(args, kwargs)``, annotated parameters' arguments into their declared types.

        Raises:
            SerializationError: the payload is corrupted or not an ``(args, kwargs)`` pair.
            TaskArgumentError: the arguments do not fit the signature or the annotations.
        """
        args, kwargs = call_arguments(self.app.serializer.loads(payload))
        if self.types is None:  # untyped: as decoded, at no extra cost
            return args, kwargs
        call = self._call_types(args, kwargs)
        return call.arguments(self.app.serializer, payload, (args, kwargs)) if call is not None else (args, kwargs)

    def load_result(self, payload: bytes) -> Any:
        """Decode a result, into the declared return type when there is one (as decoded if it does not fit)."""
        value = self.app.serializer.loads(payload)
        return self.types.result(self.app.serializer, payload, value) if self.types is not None else value

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
