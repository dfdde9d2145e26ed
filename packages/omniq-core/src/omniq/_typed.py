"""Arguments and results as the types a task function declares.

MessagePack and JSON have no schema: decoded untyped, a ``datetime``
parameter would receive a string and a dataclass a dict. A function's
annotations are the schema. For each registered function this module builds,
once and lazily, msgspec types for its annotated parameters and return
value, and uses them in three places:

* at enqueue, the payload just encoded is decoded again into those types,
  exactly as a worker will decode it, so a call that a worker could not
  decode is refused with nothing stored (:class:`TaskArgumentError`, naming
  the argument);
* on a worker, the payload is decoded into those types before the call;
* in ``get_result``, the result is decoded into the declared return type.

msgpack and json payloads are decoded by a typed msgspec decoder, made once
per call shape (how many positional arguments, which keywords) and format:
one decode, no per-value hook; and none at all when every typed argument
already is exactly its annotated leaf class (``int``, ``str``, ``datetime``,
``UUID``...). Pickle payloads already restore their types:
they are checked at enqueue, strictly, on the Python values, and passed
through untouched. Formats from plugins are converted from their decoded
data with ``msgspec.convert``.

A parameter whose annotation is missing, ``Any``, cannot be resolved, or
names a type msgspec cannot decode stays untyped and behaves as before; a
function with no typed parameter pays nothing.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import inspect
import logging
import math
import re
import types
import typing
import uuid
from typing import Any

import msgspec
import msgspec.inspect

from omniq.errors import TaskArgumentError
from omniq.serialization import PICKLE_FORMATS, SerializerRegistry

__all__ = ["CallTypes", "FunctionTypes", "function_types"]

logger = logging.getLogger(__name__)

#: types a pickle payload carries as themselves: at enqueue they must be given as such, not as strings.
_NATIVE = (datetime.datetime, datetime.date, datetime.time, datetime.timedelta, uuid.UUID, decimal.Decimal, bytes)

#: where a validation error points: ``$[0][i]...`` (positional i) or ``$[1].name...`` (keyword).
_ERROR_PATH = re.compile(r" - at `\$\[(?:0\]\[(?P<index>\d+)\]|1\]\.(?P<key>[^.\[`]+))(?P<rest>[^`]*)`$")

#: classes whose instances always decode back as themselves: a value of exactly such an annotated
#: class needs no decoding, at enqueue or on a worker (floats only when finite: json writes nan and inf as null).
_LEAVES = frozenset(
    (
        int,
        float,
        str,
        bool,
        bytes,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        uuid.UUID,
        decimal.Decimal,
    )
)

_UNDECODED = object()
# The decoding types are built at run time from a signature, which a type checker cannot follow.
_TypedDict: Any = typing.TypedDict
_tuple: Any = tuple


class _Typed:
    """One msgspec type, decoded from any allowed payload format (a decoder is made per format, once)."""

    def __init__(self, type_: Any) -> None:
        self.type = type_
        self._decoders: dict[str, Any] = {}

    def decode(self, serializer: SerializerRegistry, payload: bytes, untyped: Any = _UNDECODED) -> Any:
        """``payload`` as this type (``untyped``: its untyped decoding, if known); raises msgspec.ValidationError."""
        fmt, body = serializer.split(payload)
        if fmt in PICKLE_FORMATS:  # pickle restores the types itself
            return serializer.loads(payload) if untyped is _UNDECODED else untyped
        try:
            decode = self._decoders[fmt]
        except KeyError:
            decode = self._decoders[fmt] = serializer.typed_decoder(fmt, self.type)
        if decode is None:  # a plugin's format: convert the data it decodes to
            data = serializer.loads(payload) if untyped is _UNDECODED else untyped
            return msgspec.convert(data, self.type, str_keys=True)
        return decode(body)


class CallTypes(_Typed):
    """The types of one call shape, ``(args, kwargs)`` as ``tuple[tuple[T0, ...], TypedDict]``.

    ``labels`` maps each typed slot (a position or a keyword) to the
    argument's name and declared type; untyped slots decode as ``Any``.
    """

    def __init__(self, task: str, labels: dict[int | str, tuple[str, Any]], n_args: int, keys: tuple[str, ...]) -> None:
        positional = tuple(labels[i][1] if i in labels else Any for i in range(n_args))
        keywords = {key: labels[key][1] if key in labels else Any for key in keys}
        kwargs_type = _TypedDict("Kwargs", keywords) if keywords else dict[str, Any]
        super().__init__(_tuple[_tuple[positional] if positional else _tuple[()], kwargs_type])
        self.task = task
        self.labels = labels
        # when every typed argument is of a leaf class, values of exactly those classes are checked by type alone
        self._leaves = tuple((slot, type_) for slot, (_, type_) in labels.items())
        if not all(type_ in _LEAVES or _is_enum(type_) for _, type_ in self._leaves):
            self._leaves = ()

    def _exact(self, args: Any, kwargs: Any) -> bool:
        """Whether every typed argument is exactly its (leaf) annotated class: nothing to decode or check."""
        if not self._leaves:
            return False
        for slot, type_ in self._leaves:
            value = args[slot] if type(slot) is int else kwargs[slot]
            if type(value) is not type_ or (type_ is float and not math.isfinite(value)):
                return False
        return True

    def check(
        self, serializer: SerializerRegistry, payload: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Raise TaskArgumentError unless a worker will decode ``payload`` into the declared types."""
        if self._exact(args, kwargs):
            return
        if serializer.default.name not in PICKLE_FORMATS:  # (it wrote the payload) decode it as a worker will
            self._decode_call(serializer, payload, _UNDECODED)
            return
        for slot, (label, type_) in self.labels.items():  # pickled values arrive as given: each must be its type
            value = args[slot] if isinstance(slot, int) else kwargs[slot]
            try:
                try:  # as plain data, so that the fields of dataclasses and Structs are checked too
                    value = msgspec.to_builtins(value, builtin_types=_NATIVE)
                except TypeError:  # something only pickle can carry, under an Any: check the outer type
                    pass
                msgspec.convert(value, type_, builtin_types=_NATIVE)
            except msgspec.ValidationError as exc:
                raise self._error(label, f"{exc}".replace("`$", f"`{label}")) from None

    def arguments(
        self, serializer: SerializerRegistry, payload: bytes, untyped: Any = _UNDECODED
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` of ``payload`` in the declared types; raises TaskArgumentError naming the argument."""
        if untyped is not _UNDECODED and self._exact(*untyped):  # decoded untyped, they are already their types
            return untyped  # type: ignore[no-any-return]
        args, kwargs = self._decode_call(serializer, payload, untyped)
        return tuple(args), dict(kwargs)

    def _decode_call(self, serializer: SerializerRegistry, payload: bytes, untyped: Any) -> Any:
        try:
            return self.decode(serializer, payload, untyped)
        except msgspec.ValidationError as exc:
            message = str(exc)
            match = _ERROR_PATH.search(message)
            if match is None:
                raise self._error(None, message) from None
            slot = int(match["index"]) if match["index"] is not None else match["key"]
            label = self.labels[slot][0] if slot in self.labels else None
            if label is not None:  # "- at `$[0][6].x`" -> "- at `point.x`", or nothing when it is the argument itself
                message = message[: match.start()] + (f" - at `{label}{match['rest']}`" if match["rest"] else "")
            raise self._error(label, message) from None

    def _error(self, label: str | None, message: str) -> TaskArgumentError:
        where = f"argument {label!r} does not match its annotation" if label is not None else "bad arguments"
        return TaskArgumentError(f"task {self.task}: {where}: {message}")


class FunctionTypes:
    """The decodable annotations of one function's parameters and return value."""

    def __init__(self, task: str, signature: inspect.Signature, params: dict[str, Any], returns: Any | None) -> None:
        self.task = task
        self.params = params
        kinds = inspect.Parameter
        parameters = list(signature.parameters.values())
        self.positional = tuple(
            p.name for p in parameters if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
        )
        self.keywords = frozenset(
            p.name for p in parameters if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
        )
        self.var_positional = next((p.name for p in parameters if p.kind is kinds.VAR_POSITIONAL), None)
        self.var_keyword = next((p.name for p in parameters if p.kind is kinds.VAR_KEYWORD), None)
        self.returns = _Typed(returns) if returns is not None else None

    def call(self, n_args: int, keys: tuple[str, ...]) -> CallTypes | None:
        """The types of a call with ``n_args`` positional arguments and ``keys`` (one that binds), or None if untyped."""
        labels: dict[int | str, tuple[str, Any]] = {}
        name: str | None
        for i in range(n_args):
            if i < len(self.positional):
                name, label = self.positional[i], self.positional[i]
            else:
                name, label = self.var_positional, f"*{self.var_positional}[{i - len(self.positional)}]"
            if name in self.params:
                labels[i] = (label, self.params[name])
        for key in keys:
            name = key if key in self.keywords else self.var_keyword
            if name in self.params:
                labels[key] = (key, self.params[name])
        return CallTypes(self.task, labels, n_args, keys) if labels else None

    def result(self, serializer: SerializerRegistry, payload: bytes, untyped: Any) -> Any:
        """The result ``payload`` in the declared return type; ``untyped`` (with a warning) when it does not fit."""
        if self.returns is None:
            return untyped
        try:
            return self.returns.decode(serializer, payload, untyped)
        except msgspec.ValidationError as exc:
            logger.warning("the result of task %s does not match its return annotation: %s", self.task, exc)
            return untyped


def function_types(task: str, func: Any, signature: inspect.Signature | None) -> FunctionTypes | None:
    """The decodable annotations of ``func``, or None when it has none (never raises)."""
    if signature is None:
        return None
    hints = _hints(func)
    params = {
        name: hint
        for name in signature.parameters
        if (hint := hints.get(name, Any)) is not Any and _decodable(hint, task, name)
    }
    returns = hints.get("return", Any)
    if returns is Any or not _decodable(returns, task, "return"):
        returns = None
    if not params and returns is None:
        return None
    return FunctionTypes(task, signature, params, returns)


def _hints(func: Any) -> dict[str, Any]:
    """``func``'s resolved annotations; each one that cannot be resolved is left out."""
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:  # one unresolvable name (or an odd callable) must not untype the others
        pass
    target = inspect.unwrap(func)
    if not inspect.isfunction(target):
        return {}
    resolved = (_resolve(name, annotation, target.__globals__) for name, annotation in target.__annotations__.items())
    return {name: hint for name, hint in resolved if hint is not _UNRESOLVED}


_UNRESOLVED = object()


def _resolve(name: str, annotation: Any, globalns: dict[str, Any]) -> tuple[str, Any]:
    """One annotation, resolved (``_UNRESOLVED`` when it cannot be)."""
    try:
        hints = typing.get_type_hints(types.SimpleNamespace(__annotations__={name: annotation}), globalns, None, True)
    except Exception as exc:
        logger.debug("annotation %r = %r cannot be resolved (%s): left untyped", name, annotation, exc)
        return name, _UNRESOLVED
    return name, hints[name]


def _decodable(type_: Any, task: str, name: str) -> bool:
    """Whether msgspec decodes ``type_`` by itself (not Any, None, or a class it does not know)."""
    if type_ is None or type_ is type(None) or type_ is object:
        return False
    try:
        info = msgspec.inspect.type_info(type_)
    except Exception as exc:
        logger.debug("annotation %r of task %s is not decodable (%s): left untyped", name, task, exc)
        return False
    return not isinstance(info, msgspec.inspect.AnyType) and not _has_custom(info, set())


def _is_enum(type_: Any) -> bool:
    return isinstance(type_, type) and issubclass(type_, enum.Enum)


def _has_custom(node: msgspec.inspect.Type, seen: set[int]) -> bool:
    """Whether a type_info tree holds a type msgspec would need a hook for."""
    if isinstance(node, msgspec.inspect.CustomType):
        return True
    if id(node) in seen:  # recursive Structs refer back to themselves
        return False
    seen.add(id(node))
    for field in node.__struct_fields__:
        value = getattr(node, field)
        for item in value if isinstance(value, tuple) else (value,):
            child = item.type if isinstance(item, msgspec.inspect.Field) else item
            if isinstance(child, msgspec.inspect.Type) and _has_custom(child, seen):
                return True
    return False
