"""Task functions: the registry of callables a worker may run, and the typed handles ``@app.task`` returns.

A handle enqueues through its app's public seam, ``AsyncOmniQ.enqueue_call``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from typing_extensions import ParamSpec, Unpack

from omniq._options import EnqueueOptions, TaskOptions
from omniq._typed import CallTypes, FunctionTypes, function_types
from omniq.errors import ConfigurationError, TaskArgumentError, UnknownTaskError
from omniq.retrying import RETRY_EVERYTHING, RetryPolicy
from omniq.serialization import call_arguments
from omniq.workflows import Signature

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ
    from omniq.models import Task, TaskResult

__all__ = ["BoundTask", "TaskFunction", "TaskRegistry", "task_name"]

P = ParamSpec("P")
R = TypeVar("R")

_NEW_SHAPE: Any = object()


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

    def __init__(
        self,
        app: AsyncOmniQ,
        func: Callable[P, R],
        name: str,
        options: EnqueueOptions,
        retry_policy: RetryPolicy = RETRY_EVERYTHING,
    ) -> None:
        self.app = app
        self.func = func
        self.name = name
        self.default_options = options
        #: which of its exceptions retry (``retry_on`` / ``no_retry_on``; see :mod:`omniq.retrying`).
        self.retry_policy = retry_policy
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
        return self.app.enqueue_call(self.name, args, kwargs, self.default_options)

    def options(self, **options: Unpack[TaskOptions]) -> BoundTask[P]:
        """Return a handle whose ``enqueue`` uses extra options (``delay``, ``queue``, ...)."""
        return BoundTask(self, self.default_options.merged(EnqueueOptions.from_kwargs(options)))

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this call for a workflow (``chain``, ``group``, ``chord``): it receives its parent's result first."""
        return Signature(self.app, self.name, args, kwargs, self.default_options)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: it runs after its parent, without receiving the parent's result."""
        return Signature(self.app, self.name, args, kwargs, self.default_options, immutable=True)

    def __repr__(self) -> str:
        return f"<TaskFunction {self.name}>"


class BoundTask(Generic[P]):
    """A task function with options fixed, from :meth:`TaskFunction.options`."""

    def __init__(self, task: TaskFunction[P, Any], options: EnqueueOptions) -> None:
        self._task = task
        self._options = options

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[str]:
        """Enqueue a call with these options; returns the task id."""
        return self._task.app.enqueue_call(self._task.name, args, kwargs, self._options)


def _async_handle(func: Callable[..., Any]) -> Callable[..., Any]:
    """The :class:`TaskFunction` behind a sync app's handle (``OmniQ.task``'s, which wraps one), else ``func``.

    So a handle made by another app, sync or async, registers and enqueues as its function does.
    """
    handle = getattr(func, "handle", None)
    return handle if isinstance(handle, TaskFunction) else func


class TaskRegistry:
    """The tasks an app knows by name: those registered, and those it may import from ``allowed_modules``."""

    def __init__(self, app: AsyncOmniQ, allowed_modules: Sequence[str]) -> None:
        self.app = app
        self.allowed_modules = tuple(allowed_modules)
        self.functions: dict[str, TaskFunction[Any, Any]] = {}

    def register(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        options: EnqueueOptions | None = None,
        retry_policy: RetryPolicy = RETRY_EVERYTHING,
    ) -> TaskFunction[Any, Any]:
        """Register ``func`` under ``name`` (default ``module.qualname``) and return its handle."""
        func = _async_handle(func)
        if isinstance(func, TaskFunction):
            func = func.func
        key = name or task_name(func)
        existing = self.functions.get(key)
        if existing is not None and existing.func is not func:
            raise ConfigurationError(f"a different function is already registered as task {key!r}")
        handle = TaskFunction(self.app, func, key, options or EnqueueOptions(), retry_policy)
        self.functions[key] = handle
        return handle

    def decorate(
        self,
        func: Callable[..., Any] | None,
        name: str | None,
        options: EnqueueOptions,
        retry_policy: RetryPolicy = RETRY_EVERYTHING,
    ) -> Any:
        """``func`` registered with ``options`` as its defaults; without ``func``, a decorator that does that."""

        def register(fn: Callable[..., Any]) -> TaskFunction[Any, Any]:
            return self.register(fn, name, options, retry_policy)

        return register(func) if func is not None else register

    def resolve(self, name: str) -> TaskFunction[Any, Any]:
        """Return the registered task ``name``; import it only from ``allowed_modules``.

        Raises:
            UnknownTaskError: nothing is registered under ``name``.
        """
        handle = self.functions.get(name)
        if handle is not None:
            return handle
        module_name, _, attr = name.rpartition(".")
        if module_name and any(module_name == m or module_name.startswith(m + ".") for m in self.allowed_modules):
            try:
                target = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise UnknownTaskError(f"task {name!r} cannot be imported: {exc}") from exc
            return self.register(target, name=name)
        raise UnknownTaskError(
            f"no task is registered as {name!r} in this worker; "
            f"registered: {', '.join(sorted(self.functions)) or 'none'}"
        )

    def name_and_defaults(self, func: Callable[..., Any] | str) -> tuple[str, EnqueueOptions]:
        """The task name of what enqueue was given (registering a new callable) and its default options."""
        if isinstance(func, str):
            handle = self.functions.get(func)
            return func, handle.default_options if handle else EnqueueOptions()
        func = _async_handle(func)
        if isinstance(func, TaskFunction):
            return func.name, func.default_options
        handle = self.functions.get(task_name(func))
        if handle is None or handle.func is not func:
            handle = self.register(func)
        return handle.name, handle.default_options

    def decode_args(self, task: Task) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """A task's arguments, as its function declares them (raises SerializationError, TaskArgumentError)."""
        handle = self.functions.get(task.func)
        if handle is not None:
            return handle.load_arguments(task.payload)
        return call_arguments(self.app.serializer.loads(task.payload))

    def decode_result(self, result: TaskResult) -> TaskResult:
        """``result`` with its value decoded, in the declared return type of a task registered here."""
        handle = self.functions.get(result.func)
        value = (
            (handle.load_result if handle else self.app.serializer.loads)(result.payload) if result.payload else None
        )
        return msgspec.structs.replace(result, result=value)
